//! cgroup v2's CLONE_INTO_CGROUP path of `clone_process`, which production hosts (pure v2)
//! take for every sandbox. This host's controllers are on v1, but its v2 hierarchy
//! (`/sys/fs/cgroup/unified` on hybrid hosts) still takes processes: the child must start
//! in the cgroup it was cloned into. A harness-less test: `clone_process` refuses to run in
//! a multi-threaded process, and the default test harness runs tests on threads.

use std::os::fd::{AsFd, OwnedFd};

use safehouse_sys::process::{self, Forked};

fn unified_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

fn main() {
    // The libtest listing protocol, which cargo-nextest relies on.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("clone_into_cgroup: test");
        }
        return;
    }
    if safehouse_sys::geteuid() != 0 {
        safehouse_jail::testkit::skip_privileged("clone_into_cgroup", "needs root to create a cgroup");
        println!("clone_into_cgroup: skipped");
        return;
    }
    let Some(mount) = unified_mount() else {
        safehouse_jail::testkit::skip_privileged("clone_into_cgroup", "no cgroup2 mount on this host");
        println!("clone_into_cgroup: skipped");
        return;
    };
    let name = format!("safehouse-clone-test-{}", std::process::id());
    let dir = format!("{mount}/{name}");
    std::fs::create_dir(&dir).expect("create a v2 cgroup");
    let fd: OwnedFd = std::fs::File::open(&dir).expect("open the cgroup").into();
    let result = match process::clone_process(0, Some(fd.as_fd())).expect("clone3 with CLONE_INTO_CGROUP") {
        Forked::Child => {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let inside = own.lines().any(|l| l.starts_with("0::") && l.ends_with(&format!("/{name}")));
            process::exit_now(if inside { 0 } else { 1 });
        }
        Forked::Parent { pid, .. } => process::wait4(pid, false).expect("wait").expect("a child"),
    };
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(result.exit_code(), Some(0), "the child did not start in {dir}");
    println!("clone_into_cgroup: 1 passed, 0 failed");
}
