//! `safehouse policy check|show|explain`

use clap::{ArgGroup, Args, Subcommand};

use safehouse_policy::explain::{self, Answer, PathKind, Question};
use safehouse_policy::model::parse_toml;
use safehouse_policy::plan::RunRequest;
use safehouse_policy::{presets, Policy};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; exit 0 if valid, 1 with the reason if not
    Check { file: String },
    /// Print a built-in policy (without NAME: list them)
    Show { name: Option<String> },
    /// Say whether a policy allows one connection, read, write or exec, and which rule decides
    ///
    /// Exit 0 when allowed, 1 when denied, 2 when the question or the policy is malformed.
    /// Filesystem answers describe the sandbox `run` would build on this host.
    /// FILE or --preset NAME gives the policy; ask exactly one question.
    ///
    /// Examples:
    ///   safehouse policy explain agent.toml --net pypi.org:443
    ///   safehouse policy explain agent.toml --write /input/data.csv
    ///   safehouse policy explain --preset default --read /etc/shadow --json
    #[command(verbatim_doc_comment)]
    Explain(ExplainArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("question").required(true).args(["net", "exec", "read", "write"])))]
pub struct ExplainArgs {
    /// The policy file (TOML)
    #[arg(required_unless_present = "preset", conflicts_with = "preset")]
    file: Option<String>,
    /// A built-in policy instead of a file (see `safehouse policy show`)
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// May the sandbox connect to HOST:PORT? IPv6 as [ADDRESS]:PORT; HOST alone means port 443
    #[arg(long, value_name = "HOST[:PORT]")]
    net: Option<String>,
    /// May the sandbox run the executable at PATH?
    #[arg(long, value_name = "PATH")]
    exec: Option<String>,
    /// May the sandbox read PATH?
    #[arg(long, value_name = "PATH")]
    read: Option<String>,
    /// May the sandbox write PATH?
    #[arg(long, value_name = "PATH")]
    write: Option<String>,
    /// Print the answer as one JSON object: question, allowed, rule, reason, hint (and notes)
    #[arg(long)]
    json: bool,
}

/// Exit status of `explain` for a malformed question or policy.
const EXIT_BAD_INPUT: i32 = 2;

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
                println!("{name:<14} {about}");
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
        PolicyCommand::Explain(a) => match answer(&a) {
            Ok(ans) => {
                print_answer(&ans, a.json);
                if ans.allowed {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("safehouse: {e:#}");
                EXIT_BAD_INPUT
            }
        },
    }
}

fn answer(a: &ExplainArgs) -> anyhow::Result<Answer> {
    let question = match (&a.net, &a.exec, &a.read, &a.write) {
        (Some(t), ..) => Question::net(t)?,
        (_, Some(p), ..) => Question::path(PathKind::Exec, p)?,
        (_, _, Some(p), _) => Question::path(PathKind::Read, p)?,
        (_, _, _, Some(p)) => Question::path(PathKind::Write, p)?,
        _ => anyhow::bail!("ask one question: --net, --exec, --read or --write"),
    };
    let policy: Policy = match (&a.file, &a.preset) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
            parse_toml(&text, file)?
        }
        (None, Some(name)) => presets::load(name)?,
        (None, None) => anyhow::bail!("give a policy FILE or --preset NAME"),
    };
    // The host as `run` sees it: which system dirs exist, which bind sources are there.
    let request = RunRequest { policy, ..Default::default() };
    let mut host = safehouse_jail::host::host_view(&request);
    if matches!(question, Question::Net { .. }) {
        // The host's own addresses as the gateway would see them now.
        host.addrs = safehouse_gateway::hostaddrs::read_now()
            .map_err(|e| anyhow::anyhow!("cannot tell this host's own addresses: {e}"))?;
    }
    Ok(explain::explain(&request.policy, &host, &question)?)
}

fn print_answer(ans: &Answer, json: bool) {
    if json {
        println!("{}", serde_json::to_string(ans).unwrap_or_default());
        return;
    }
    println!("{}", if ans.allowed { "allowed" } else { "denied" });
    println!("question: {}", ans.question);
    println!("rule:     {}", ans.rule);
    println!("reason:   {}", ans.reason);
    println!("hint:     {}", ans.hint);
    for n in &ans.notes {
        println!("note:     {n}");
    }
}
