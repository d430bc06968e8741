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
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => cmd::run::main(*args),
        Command::Doctor(args) => cmd::doctor::main(args),
        Command::Policy(c) => cmd::policy::main(c),
    };
    std::process::exit(code);
}
