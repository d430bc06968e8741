//! `safehouse policy check|show`

use clap::Subcommand;

use safehouse_policy::model::parse_toml;
use safehouse_policy::presets;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; exit 0 if valid, 1 with the reason if not
    Check { file: String },
    /// Print a built-in policy (without NAME: list them)
    Show { name: Option<String> },
}

pub fn main(c: PolicyCommand) -> i32 {
    match c {
        PolicyCommand::Check { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("safehouse: cannot read {file}: {e}");
                    return 1;
                }
            };
            match parse_toml(&text, &file) {
                Ok(_) => {
                    println!("{file}: ok");
                    0
                }
                Err(e) => {
                    eprintln!("safehouse: {e}");
                    1
                }
            }
        }
        PolicyCommand::Show { name: None } => {
            for (name, about, _) in presets::PRESETS {
                println!("{name:<12} {about}");
            }
            0
        }
        PolicyCommand::Show { name: Some(name) } => match presets::source(&name) {
            Ok(src) => {
                print!("{src}");
                0
            }
            Err(e) => {
                eprintln!("safehouse: {e}");
                1
            }
        },
    }
}
