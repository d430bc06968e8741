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
}

pub fn main(a: ServeArgs) -> i32 {
    let opts = safehouse_daemon::DaemonOptions {
        listen: a.listen,
        data_dir: a.data_dir.unwrap_or_else(safehouse_daemon::default_data_dir),
        allowed_hosts: a.allowed_hosts,
        spawners: a.spawners.clamp(1, 64),
    };
    match safehouse_daemon::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("safehouse: {e}");
            1
        }
    }
}
