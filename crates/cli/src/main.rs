//! `safehouse`: the one binary. Each subcommand lives in its own module under `cmd/` and
//! calls into the library crates; this file only parses arguments.

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
    /// Validate and show policies
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `run` reserves exit statuses for the command; its own usage errors are 125,
            // like every other failure to set a sandbox up.
            let is_run = std::env::args().nth(1).as_deref() == Some("run");
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ if is_run => cmd::run::EXIT_SETUP,
                _ => 2,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
        Command::Run(args) => cmd::run::main(*args),
        Command::Doctor(args) => cmd::doctor::main(args),
        Command::Policy(c) => cmd::policy::main(c),
    };
    std::process::exit(code);
}
