//! `safehouse doctor`: what this host offers and what `run` will enforce here.

use clap::Args;
use serde_json::json;

use safehouse_jail::host;
use safehouse_policy::landlock::scopes_for_abi;

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok  "
    } else {
        "MISSING"
    }
}

pub fn main(a: DoctorArgs) -> i32 {
    let f = host::features();
    let userns = f.user_namespaces.clone();
    let landlock = f.landlock_abi.clone();
    let seccomp = f.seccomp.clone();
    let cg_ok = f.cgroups.writable;
    let ready = userns.is_ok() && landlock.is_ok() && seccomp.is_ok();
    let level = if !ready {
        "none: `run` refuses to start (a required layer is missing)".to_string()
    } else if cg_ok {
        "full: namespaces, seccomp, Landlock, capabilities dropped, cgroup limits".to_string()
    } else {
        "partial: namespaces, seccomp, Landlock, capabilities dropped; memory/pids/cpu limits cannot be enforced (requests for them are refused)".to_string()
    };
    let scoping = landlock.as_ref().map(|abi| scopes_for_abi(*abi) != 0).unwrap_or(false);
    if a.json {
        let report = json!({
            "kernel": f.kernel,
            "mode": if f.root { "root" } else { "rootless" },
            "user_namespaces": userns.as_ref().map(|_| true).unwrap_or(false),
            "user_namespaces_error": userns.err(),
            "landlock_abi": landlock.as_ref().ok(),
            "landlock_error": landlock.as_ref().err(),
            "landlock_scoping": scoping,
            "seccomp": seccomp.is_ok(),
            "seccomp_error": seccomp.err(),
            "cgroup": f.cgroup_summary,
            "cgroup_version": f.cgroups.version.as_ref().map(|v| format!("{v:?}").to_lowercase()),
            "cgroup_controllers": f.cgroups.controllers,
            "cgroup_writable": cg_ok,
            "overlayfs": f.overlayfs,
            "isolation": level,
            "ready": ready,
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return if ready { 0 } else { 1 };
    }
    println!("safehouse doctor");
    println!("  kernel            {}", f.kernel);
    println!("  mode              {}", if f.root { "root" } else { "rootless (user namespaces)" });
    println!("  [{}] user namespaces {}", mark(userns.is_ok()), userns.err().unwrap_or_default());
    match &landlock {
        Ok(abi) => println!(
            "  [{}] landlock ABI {abi}{}",
            mark(true),
            if scoping {
                " (filesystem + abstract-socket and signal scoping)"
            } else {
                " (filesystem; no scoping before ABI 6)"
            }
        ),
        Err(e) => println!("  [{}] landlock: {e}", mark(false)),
    }
    println!("  [{}] seccomp filter {}", mark(seccomp.is_ok()), seccomp.err().unwrap_or_default());
    println!("  [{}] cgroups {}", mark(cg_ok), f.cgroup_summary);
    println!("  [{}] overlayfs (for --rootfs DIR)", mark(f.overlayfs));
    println!("  isolation level   {level}");
    if ready {
        0
    } else {
        1
    }
}
