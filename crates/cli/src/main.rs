//! `safehouse`: the one binary. Each subcommand lives in its own module under `cmd/` and
//! calls into the library crates; this file only parses arguments.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "safehouse",
    version,
    about = "An isolation runtime for AI agents: run commands with exactly the capabilities their task needs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a fresh sandbox, stream its stdio, tear down, exit with its status
    Run(Box<cmd::run::RunArgs>),
    /// Report which kernel features exist here and which isolation layers `run` enforces
    Doctor(cmd::doctor::DoctorArgs),
    /// Validate, explain and show policies
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// The daemon: HTTP API, sandbox manager, state under --data-dir
    Serve(cmd::serve::ServeArgs),
    /// Check the tamper-evident audit log under DATA_DIR/audit, export its records
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// The local image store: pull, import, ls, rm, inspect, gc (DATA_DIR/images)
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Templates: images built from Dockerfiles (template build)
    #[command(subcommand)]
    Template(cmd::template::TemplateCommand),

    // Clients of a running daemon: SAFEHOUSE_URL (default http://127.0.0.1:8700) and
    // SAFEHOUSE_API_KEY say which daemon and which key; with neither set, the per-user local
    // daemon (cmd/local.rs).
    /// Manage sandboxes on a daemon (create, ls, info, kill, timeout, freeze, thaw, pause,
    /// resume, snapshot, fork)
    #[command(subcommand)]
    Sandbox(cmd::sandbox::SandboxCommand),
    /// Named volumes on a daemon: create, ls, rm
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCommand),
    /// Run a command in a live sandbox, streaming its stdio; exits with its status (125: exec failed)
    Exec(cmd::exec::ExecArgs),
    /// Open an interactive terminal (PTY) in a live sandbox
    Shell(cmd::shell::ShellArgs),
    /// Move files in and out of a live sandbox
    #[command(subcommand)]
    Files(cmd::files::FilesCommand),
    /// Manage API keys (needs the admin key)
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Print a sandbox's events (or all the key may see); --follow keeps streaming
    Events(cmd::events::EventsArgs),
    /// The emergency stop: freeze, cut off, kill and remove every sandbox (the admin key:
    /// all on the daemon; another key: its own); returns when none is left running
    KillAll(cmd::kill_all::KillAllArgs),
    /// The per-user daemon clients start or reuse when SAFEHOUSE_URL is unset (local mode)
    #[command(subcommand)]
    Local(cmd::local::LocalCommand),
    /// Serve MCP (Model Context Protocol) on stdio for an AI client, backed by the daemon:
    /// sandbox tools (create, run commands and code, files, kill); docs/mcp.md
    Mcp(cmd::mcp::McpArgs),
}

impl Command {
    /// Commands that only read and print: a signal leaves nothing half done behind (no
    /// sandbox, no server, no store write).
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Doctor(_)
                | Command::Policy(_)
                | Command::Audit(_)
                | Command::Image(cmd::image::ImageCommand::Ls(_) | cmd::image::ImageCommand::Inspect(_))
                | Command::Sandbox(cmd::sandbox::SandboxCommand::Ls(_) | cmd::sandbox::SandboxCommand::Info { .. })
                | Command::Events(_)
        )
    }
}

fn main() {
    // The gateway process (started by `serve` and `run`, never by hand): before anything
    // else, so it carries nothing of the CLI into its confinement.
    if std::env::args_os().nth(1).is_some_and(|a| a == safehouse_gateway::process::SUBCOMMAND) {
        std::process::exit(safehouse_gateway::process::worker::main());
    }
    if std::env::args().nth(1).is_some_and(|a| a == safehouse_gateway::process::PROBE_SUBCOMMAND) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(safehouse_gateway::process::probe::main(&args));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `run`, `exec` and `shell` reserve exit statuses for the command; their own usage
            // errors are 125, like every other failure to set a sandbox up.
            let is_run = matches!(std::env::args().nth(1).as_deref(), Some("run" | "exec" | "shell"));
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ if is_run => cmd::run::EXIT_SETUP,
                _ => 2,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if cli.command.only_prints() {
        // Rust ignores SIGPIPE, so `safehouse image ls | head` would fail (or panic in
        // println!) on the closed pipe. Commands that only print end quietly like any Unix
        // tool; those that own a sandbox or a connection keep EPIPE and tear down in order.
        safehouse_sys::process::default_signal(libc::SIGPIPE);
    }
    let code = match cli.command {
        Command::Run(args) => cmd::run::main(*args),
        Command::Doctor(args) => cmd::doctor::main(args),
        Command::Policy(c) => cmd::policy::main(c),
        Command::Serve(args) => cmd::serve::main(args),
        Command::Audit(c) => cmd::audit::main(c),
        Command::Image(c) => cmd::image::main(c),
        Command::Template(c) => cmd::template::main(c),
        Command::Sandbox(c) => cmd::sandbox::main(c),
        Command::Volume(c) => cmd::volume::main(c),
        Command::Exec(args) => cmd::exec::main(args),
        Command::Shell(args) => cmd::shell::main(args),
        Command::Files(c) => cmd::files::main(c),
        Command::Keys(c) => cmd::keys::main(c),
        Command::Events(args) => cmd::events::main(args),
        Command::KillAll(a) => cmd::kill_all::main(a),
        Command::Mcp(a) => cmd::mcp::main(a),
        Command::Local(c) => cmd::local::main(c),
    };
    std::process::exit(code);
}
