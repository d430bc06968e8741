//! `safehouse serve [--listen ADDR] [--data-dir DIR] [--tls-cert FILE --tls-key FILE | --tls-self-signed]`:
//! the daemon.

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
    /// Every tenant's quotas but the admin tenant's (repeatable; docs/quotas.md):
    /// NAME=VALUE,... with NAME one of sandboxes (running), memory and disk (sums of the
    /// sandboxes' limits), creates, execs and events (rates: 10/s, 600/min); over one a
    /// request gets 429 `tenant_quota`. Default: $SAFEHOUSE_QUOTA, else none
    #[arg(long = "quota", value_name = "NAME=VALUE,...", env = "SAFEHOUSE_QUOTA")]
    quota: Vec<String>,
    /// One tenant's quotas, on top of --quota (repeatable): TENANT:NAME=VALUE,...; a value
    /// `unlimited` lifts one; the admin tenant has quotas only this way
    #[arg(long = "tenant-quota", value_name = "TENANT:NAME=VALUE,...")]
    tenant_quota: Vec<String>,
    /// Serve HTTPS only (the API, E2B front, MCP, attach and port streams) with this PEM
    /// certificate chain, leaf first (docs/tls.md); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS only with a self-signed certificate kept in DATA_DIR/tls (made on first
    /// start; its fingerprint and CA file are printed at every start)
    #[arg(long)]
    tls_self_signed: bool,
}

pub fn main(a: ServeArgs) -> i32 {
    let quotas = match safehouse_daemon::QuotaConfig::parse(&a.quota, &a.tenant_quota) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("safehouse: {e}");
            return 2;
        }
    };
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
        quotas,
        tls: match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(safehouse_daemon::TlsSource::Files { cert, key }),
            _ if a.tls_self_signed => Some(safehouse_daemon::TlsSource::SelfSigned),
            _ => None,
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
