"""`safehouse policy explain|show` on temporary policies: no daemon, no sandbox, no root."""
import json
import subprocess
import tomllib

import pytest

from .support import BIN, skip_or_fail


def policy_cmd(*args):
    if not BIN:
        skip_or_fail("safehouse binary not built (set SAFEHOUSE_BIN)")
    return subprocess.run([BIN, "policy", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def policy_file(tmp_path):
    data = tmp_path / "data"
    (data / "secret").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    path = tmp_path / "agent.toml"
    path.write_text(f"""
version = 1
[filesystem]
read_only  = [{{ host = "{data}", path = "/input" }}]
read_write = [{{ host = "{out}", path = "/output" }}]
scratch = ["/cache"]
hidden = ["/input/secret"]
[network]
allow = ["pypi.org", "*.pythonhosted.org:443", "10.20.0.0/16:5432"]
egress_bytes = "2GiB"
""")
    return str(path)


def explain(policy, *question, json_out=False):
    args = ["explain", *policy, *question] + (["--json"] if json_out else [])
    return policy_cmd(*args)


@pytest.mark.parametrize("question,allowed,rule", [
    (["--net", "pypi.org:443"], True, 'network.allow[0] = "pypi.org"'),
    (["--net", "files.pythonhosted.org:443"], True, 'network.allow[1] = "*.pythonhosted.org:443"'),
    (["--net", "pypi.org:22"], False, "default deny"),
    (["--net", "example.com:443"], False, "default deny"),
    (["--net", "127.1:80"], False, "this host (127.0.0.0/8)"),  # loopback is the host's
    (["--net", "[::ffff:10.20.3.4]:5432"], True, 'network.allow[2] = "10.20.0.0/16:5432"'),
    (["--read", "/input/a.csv"], True, "filesystem.read_only[0]"),
    (["--read", "/input/secret/key"], False, 'filesystem.hidden[0] = "/input/secret"'),
    (["--read", "/etc/shadow"], False, "built-in hidden host secret /etc/shadow"),
    (["--read", "/proc/kcore"], False, "runtime mask /proc/kcore"),
    (["--read", "/root/.ssh/id_rsa"], False, "not in the sandbox"),
    (["--write", "/output/r.json"], True, "filesystem.read_write[0]"),
    (["--write", "/input/a.csv"], False, "filesystem.read_only[0]"),
    (["--write", "/cache/x"], True, 'filesystem.scratch[0] = "/cache"'),
    (["--write", "/workspace/x"], True, "built-in writable directory /workspace"),
    (["--write", "/usr/bin/x"], False, 'filesystem.rootfs = "host" (/usr, read-only)'),
    (["--exec", "/usr/bin/env"], True, 'filesystem.rootfs = "host" (/usr, read-only)'),
    (["--exec", "/proc/self/exe"], False, "runtime: /proc is the sandbox's own procfs"),
])
def test_explain_answers_and_exit_status(policy_file, question, allowed, rule):
    r = explain([policy_file], *question)
    assert r.returncode == (0 if allowed else 1), r
    lines = r.stdout.splitlines()
    assert lines[0] == ("allowed" if allowed else "denied"), r.stdout
    assert any(line.startswith("rule:") and rule in line for line in lines), r.stdout
    assert any(line.startswith("hint:") for line in lines), r.stdout

    j = explain([policy_file], *question, json_out=True)
    assert j.returncode == r.returncode, j
    answer = json.loads(j.stdout)
    assert {"question", "allowed", "rule", "reason", "hint"} <= answer.keys(), answer
    assert answer["allowed"] is allowed
    assert rule in answer["rule"]
    assert answer["reason"] and answer["hint"]


def test_denials_say_what_to_write(policy_file):
    answer = json.loads(explain([policy_file], "--net", "example.com:443", json_out=True).stdout)
    assert answer["hint"] == 'to allow it, add "example.com:443" to network.allow in the sandbox\'s policy'
    answer = json.loads(explain([policy_file], "--write", "/input/a.csv", json_out=True).stdout)
    assert answer["hint"] == "to make it writable, move filesystem.read_only[0] to filesystem.read_write"


def test_allowed_names_carry_the_resolution_note(policy_file):
    answer = json.loads(explain([policy_file], "--net", "pypi.org:443", json_out=True).stdout)
    assert any("resolves to are checked" in n for n in answer["notes"]), answer


def test_presets_can_be_explained():
    r = explain(["--preset", "pypi"], "--net", "files.pythonhosted.org:443")
    assert r.returncode == 0, r
    r = explain(["--preset", "default"], "--net", "pypi.org:443")
    assert r.returncode == 1 and "network.allow is empty" in r.stdout, r
    r = explain(["--preset", "web-research"], "--net", "169.254.169.254:80")
    assert r.returncode == 1 and "cloud metadata" in r.stdout, r


def test_tools_allow_patterns(tmp_path):
    path = tmp_path / "tools.toml"
    path.write_text('version = 1\n[tools]\nallow = ["/usr/bin/python3*", "/usr/bin/git"]\n')
    if policy_cmd("check", str(path)).returncode != 0:
        skip_or_fail("this build refuses tools.allow")
    r = explain([str(path)], "--exec", "/usr/bin/python3.12")
    assert r.returncode == 0 and 'tools.allow[0] = "/usr/bin/python3*"' in r.stdout, r
    r = explain([str(path)], "--exec", "/usr/bin/curl")
    assert r.returncode == 1 and "tools.allow (no pattern matches)" in r.stdout, r


@pytest.mark.parametrize("args", [
    ["--net", "pypi.org:0"],               # port 0 (a host alone means port 443: test_first_hour_cli)
    ["--net", "2001:db8::1:443"],          # IPv6 without brackets
    ["--read", "etc/passwd"],              # relative
    ["--write", "/tmp/../etc/passwd"],     # .. component
])
def test_bad_questions_exit_2(policy_file, args):
    r = explain([policy_file], *args)
    assert r.returncode == 2 and r.stderr.startswith("safehouse: "), r


def test_bad_invocations_exit_2(policy_file, tmp_path):
    assert explain([policy_file]).returncode == 2                                  # no question
    assert explain([policy_file], "--net", "a.b:1", "--read", "/x").returncode == 2  # two questions
    assert explain([], "--read", "/x").returncode == 2                             # no policy
    assert explain([str(tmp_path / "missing.toml")], "--read", "/x").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmemroy = 1\n")
    r = explain([str(bad)], "--read", "/x")
    assert r.returncode == 2 and "line 2 column 1" in r.stderr, r
    assert explain(["--preset", "nope"], "--read", "/x").returncode == 2


def test_show_lists_presets_and_prints_toml():
    r = policy_cmd("show")
    assert r.returncode == 0, r
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == ["default", "offline", "workspace", "pypi", "github", "web-research"], r.stdout
    for name in names:
        r = policy_cmd("show", name)
        assert r.returncode == 0, r
        doc = tomllib.loads(r.stdout)
        assert doc["version"] == 1
    pypi = tomllib.loads(policy_cmd("show", "pypi").stdout)
    assert pypi["network"]["allow"] == ["pypi.org:443", "files.pythonhosted.org:443"]
    assert pypi["network"]["egress_bytes"] == "2GiB"


def test_a_closed_stdout_ends_a_printing_command_quietly():
    """`safehouse policy show | head -0`: the reader is gone before the first write. A
    printing command dies of SIGPIPE like any Unix tool (was: a Rust panic, status 101).
    Outside: python's own write to the same kind of pipe gets EPIPE, so the probe is real."""
    import os
    import signal

    if not BIN:
        skip_or_fail("safehouse binary not built (set SAFEHOUSE_BIN)")
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    try:
        p = subprocess.run([BIN, "policy", "show", "pypi"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(w)
    assert p.returncode == -signal.SIGPIPE, p
    assert "panicked" not in p.stderr, p.stderr
