//! The host side's decisions, without root: what a host that lacks a layer refuses, which
//! limits go unenforced without a cgroup, and the messages on the sync channel.

use std::os::fd::AsRawFd;

use safehouse_policy::model::Policy;
use safehouse_policy::plan::{HostView, RunRequest};

use super::*;
use crate::cgroup::{CgroupSupport, CgroupVersion};

fn features(root: bool, cgroups_writable: bool) -> Features {
    Features {
        kernel: "6.1".into(),
        root,
        uid: if root { 0 } else { 1000 },
        user_namespaces: Ok(()),
        landlock_abi: Ok(7),
        seccomp: Ok(()),
        overlayfs: true,
        cgroups: CgroupSupport {
            version: Some(CgroupVersion::V1),
            controllers: vec!["memory".into(), "pids".into()],
            writable: cgroups_writable,
            base: "/sys/fs/cgroup".into(),
            hierarchies: Vec::new(),
            delegated: false,
            reason: None,
        },
        cgroup_summary: "v1".into(),
    }
}

fn plan_of(policy: &str) -> Plan {
    let policy: Policy = safehouse_policy::model::parse_toml(policy, "test").expect("policy");
    let req = RunRequest { policy, ..RunRequest::default() };
    plan::compile(&req, &HostView::default()).expect("plan")
}

#[test]
fn a_missing_layer_is_refused_naming_it() {
    assert_eq!(preflight(&features(true, true)).unwrap(), 7);
    for (f, layer) in [
        (Features { user_namespaces: Err("off".into()), ..features(true, true) }, "user namespaces"),
        (Features { seccomp: Err("off".into()), ..features(true, true) }, "seccomp"),
        (Features { landlock_abi: Err("off".into()), ..features(true, true) }, "landlock"),
        (Features { landlock_abi: Ok(MIN_ABI - 1), ..features(true, true) }, "landlock"),
    ] {
        match preflight(&f) {
            Err(JailError::LayerUnavailable { layer: l, .. }) => assert_eq!(l, layer),
            other => panic!("{layer}: {other:?}"),
        }
    }
}

#[test]
fn without_a_cgroup_default_limits_go_unenforced_asked_ones_are_refused() {
    let (limits, unenforced) = plan_cgroup(&features(true, true), &plan_of("version = 1\n")).unwrap();
    assert!(limits.is_some() && unenforced.is_empty());
    let (limits, unenforced) = plan_cgroup(&features(false, false), &plan_of("version = 1\n")).unwrap();
    assert!(limits.is_none());
    let names: Vec<&str> = unenforced.iter().map(|u| u.limit.as_str()).collect();
    assert_eq!(names, ["memory", "pids"]);
    assert!(unenforced[0].reason.contains("rootless"), "{}", unenforced[0].reason);
    for (policy, layer) in [
        ("version = 1\n[limits]\nmemory = \"64MiB\"\n", "the memory limit"),
        ("version = 1\n[limits]\npids = 10\n", "the pids limit"),
        ("version = 1\n[limits]\ncpus = 1.0\n", "the cpus limit"),
    ] {
        match plan_cgroup(&features(false, false), &plan_of(policy)) {
            Err(JailError::LayerUnavailable { layer: l, .. }) => assert_eq!(l, layer),
            other => panic!("{policy}: {other:?}"),
        }
    }
}

#[test]
fn the_gateway_listener_is_taken_only_as_tagged() {
    let (a, b) = safehouse_sys::unix::seqpacket_pair().unwrap();
    let (r, _w) = safehouse_sys::fs::pipe().unwrap();
    safehouse_sys::unix::send_with_fds(&b, b"x", &[r.as_raw_fd()]).unwrap();
    assert!(matches!(receive_gateway_listener(&a), Err(JailError::Setup(m)) if m.contains("something other")));
    drop(b);
    // A hang-up: the sandbox failed before sending it (its status record says why).
    assert!(matches!(receive_gateway_listener(&a), Err(JailError::Setup(m)) if m.contains("failed before")));
}

#[test]
fn a_failed_proc_write_names_the_file() {
    let me = std::process::id() as i32;
    let err = write_proc(me, "no-such-file", "x").unwrap_err();
    assert!(err.to_string().contains(&format!("write /proc/{me}/no-such-file")), "{err}");
}
