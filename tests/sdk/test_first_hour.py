"""Rough edges a new user met in the first hour (issue 17), each reproduced and fixed:
TOML text as a policy, the stdin cap pointing at files.write, CommandExitException naming
stderr, a connection error naming the URL and the fix."""
import pytest

from safehouse import CommandExitException, InvalidRequestError, Policy, Sandbox
from safehouse._config import STDIN_CAP, create_body


@pytest.mark.unit
def test_toml_text_is_a_policy():
    body = create_body('version = 1\n[limits]\nmemory = "64MiB"\n', None, None, None, None)
    assert body["policy"] == {"version": 1, "limits": {"memory": "64MiB"}}
    with pytest.raises(ValueError, match="not valid TOML"):
        create_body("version = = 1", None, None, None, None)
    with pytest.raises(TypeError, match="a Policy, a dict or TOML text"):
        create_body(42, None, None, None, None)
    assert Policy.from_toml('version = 1\n[network]\nallow = ["pypi.org"]') == Policy().allow_hosts("pypi.org")


def test_a_toml_policy_creates_a_sandbox_and_its_errors_name_the_field(daemon):
    toml = 'version = 1\n[limits]\nmemory = "96MiB"\n'
    with Sandbox.create(policy=toml, timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        # The limit from the TOML holds: 200 MiB does not fit in 96.
        r = s.commands.run(["python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"],
                           raise_on_error=False)
        assert r.oom_killed and r.exit_code != 0, r
        assert s.commands.run(["python3", "-c", "b = bytearray(16 << 20)"]).exit_code == 0
    with pytest.raises(InvalidRequestError, match="lots"):
        Sandbox.create(policy='[limits]\nmemory = "lots"\n', timeout=60)


def test_stdin_over_the_cap_points_at_files_write(daemon):
    with Sandbox.create(timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        r = s.commands.run("wc -c", stdin="x" * STDIN_CAP)
        assert r.stdout.strip() == str(STDIN_CAP), r
        with pytest.raises(ValueError, match=r"files\.write\(\)"):
            s.commands.run("wc -c", stdin="x" * (STDIN_CAP + 1))
        # What the message suggests works for any size.
        s.files.write("/workspace/input", "x" * (4 << 20))
        assert s.commands.run("wc -c < /workspace/input").stdout.strip() == str(4 << 20)


def test_command_exit_exception_names_stderr(daemon):
    with Sandbox.create(timeout=60) as s:
        daemon.created.append((daemon.admin_key, s.id))
        with pytest.raises(CommandExitException) as e:
            s.commands.run("echo first >&2; echo 'No such file: data.csv' >&2; exit 2")
        assert str(e.value) == "exit status 2; stderr: first\nNo such file: data.csv", str(e.value)
        with pytest.raises(CommandExitException) as e:
            s.commands.run("exit 5")
        assert str(e.value) == "exit status 5"
