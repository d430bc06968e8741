//! `safehouse shell ID [-- CMD...]`: an interactive terminal in a live sandbox. Starts a
//! login shell (bash when the sandbox has it, else sh) on a PTY the size of the local
//! terminal, puts the local terminal in raw mode, relays both ways, follows window-size
//! changes (SIGWINCH through a signalfd) and restores the terminal on the way out.

use std::process::{Command, Stdio};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use safehouse_sys::process::{isatty, make_raw, restore_termios};

use super::client::{parse_pairs, Client};
use super::exec::{spawn_stdin, start_process, Attached, Signals, EXIT_CLIENT};

/// bash if the sandbox has one, else the POSIX shell; both as login shells.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l";

#[derive(Args)]
#[command(trailing_var_arg = true)]
pub struct ShellArgs {
    /// The sandbox to open a terminal in
    id: String,
    /// Set a variable in the shell (repeatable); TERM is taken from here by default
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the sandbox (the daemon's default is /workspace)
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Run this on the terminal instead of a login shell
    #[arg(value_name = "CMD")]
    command: Vec<String>,
}

pub fn main(a: ShellArgs) -> i32 {
    match shell(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            EXIT_CLIENT
        }
    }
}

/// The local terminal in raw mode until dropped.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal> {
        let saved = make_raw(0).map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_termios(0, &self.saved);
    }
}

/// (rows, cols) of the terminal on stdin, read with `stty size` (no ioctl in this crate).
fn terminal_size() -> Option<(u16, u16)> {
    let out = Command::new("stty").arg("size").stdin(Stdio::inherit()).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(rows)), Some(Ok(cols))) if rows > 0 && cols > 0 => Some((rows, cols)),
        _ => None,
    }
}

fn shell(a: ShellArgs) -> Result<i32> {
    let client = Client::from_env()?;
    if !isatty(0) || !isatty(1) {
        bail!("shell needs a terminal on stdin and stdout; without one use `safehouse exec ID -- sh`");
    }
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    let mut env = parse_pairs(&a.env, "--env")?;
    if !env.contains_key("TERM") {
        let term = std::env::var("TERM").ok().filter(|t| !t.is_empty() && t != "dumb");
        env.insert("TERM".into(), term.unwrap_or_else(|| "xterm-256color".into()));
    }
    let cmd = if a.command.is_empty() { json!(["/bin/sh", "-c", LOGIN_SHELL]) } else { json!(a.command) };
    let mut body = json!({ "cmd": cmd, "env": env, "pty": { "rows": rows, "cols": cols } });
    if let Some(cwd) = &a.cwd {
        body["cwd"] = json!(cwd);
    }
    let pid = start_process(&client, &a.id, &body)?;
    let mut session = Attached::connect(&client, &a.id, pid)?;
    // In raw mode Ctrl-C is a byte for the remote terminal; these come from elsewhere.
    let signals = Signals::block(&[libc::SIGWINCH, libc::SIGTERM, libc::SIGHUP, libc::SIGINT])?;
    let raw = RawTerminal::enter()?;
    let stdin = spawn_stdin();
    let mut size = (rows, cols);
    let outcome = session.run(Some(stdin), &mut |s| {
        for sig in signals.pending() {
            if sig != libc::SIGWINCH {
                // TERM or HUP: the local terminal is going away, so hang up the remote one.
                let sig = if sig == libc::SIGINT { sig } else { libc::SIGHUP };
                s.send(&json!({ "type": "signal", "signal": sig }))?;
                continue;
            }
            if let Some(now) = terminal_size().filter(|now| *now != size) {
                size = now;
                s.send(&json!({ "type": "resize", "rows": now.0, "cols": now.1 }))?;
            }
        }
        Ok(())
    });
    drop(raw);
    Ok(outcome?.status())
}
