//! `safehouse serve [--listen ADDR] [--data-dir DIR]`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Where the daemon keeps its state (default /var/lib/safehouse as root, else
    /// ~/.local/share/safehouse)
    #[arg(long, value_name = "DIR", env = "SAFEHOUSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Also accept this Host header (repeatable), e.g. a name behind a reverse proxy
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Spawner processes: how many sandboxes can be created in parallel
    #[arg(long, default_value_t = 2)]
    spawners: usize,
    /// Warm code-interpreter sandboxes kept ready per tenant and shape, each with a Python
    /// kernel up (~100-150 MB each); created sandboxes of the code-interpreter template come
    /// from it (docs/interpreter.md). Default: $SAFEHOUSE_CODE_POOL, else 0 (no pool)
    #[arg(long, value_name = "N")]
    code_pool: Option<usize>,
}

pub fn main(a: ServeArgs) -> i32 {
    let opts = safehouse_daemon::DaemonOptions {
        listen: a.listen,
        data_dir: a.data_dir.unwrap_or_else(safehouse_daemon::default_data_dir),
        allowed_hosts: a.allowed_hosts,
        spawners: a.spawners.clamp(1, 64),
        code_pool: match a.code_pool {
            Some(n) => n,
            None => match std::env::var("SAFEHOUSE_CODE_POOL") {
                Ok(v) => match v.trim().parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => {
                        eprintln!("safehouse: SAFEHOUSE_CODE_POOL={v:?} is not a number of sandboxes");
                        return 2;
                    }
                },
                Err(_) => 0,
            },
        },
    };
    if opts.code_pool > 64 {
        eprintln!("safehouse: --code-pool {} is more than 64 warm sandboxes per pool; ask for fewer", opts.code_pool);
        return 2;
    }
    match safehouse_daemon::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("safehouse: {e}");
            1
        }
    }
}
