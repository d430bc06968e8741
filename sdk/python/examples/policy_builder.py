"""The policy builder: limits, filesystem, allowed tools and automatic stop rules written in
Python (docs/POLICY.md), then enforced in a sandbox; metrics show what it uses.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/policy_builder.py
"""
import json

from safehouse import InvalidRequestError, Policy, Sandbox


def main() -> None:
    policy = (Policy()
              .memory("256MiB").pids(64).disk("64MiB")
              .hidden("/etc/hostname")
              .allow_tools("/bin/sh", "/bin/echo", "/usr/bin/python3*")   # nothing else may run
              .kill_after_violations(50)                                    # stop a misbehaving agent
              .cpu_budget("30s"))
    print(json.dumps(policy.to_dict(), sort_keys=True))
    # network: .allow_hosts("pypi.org:443").egress_budget("1GiB") (needs a root daemon)

    with Sandbox.create(policy=policy, timeout=120) as sbx:
        print(sbx.commands.run("echo allowed").stdout.strip())
        r = sbx.commands.run("/bin/ls /", raise_on_error=False)
        print("ls:", r.exit_code, r.stderr.strip())
        r = sbx.run_code("print(open('/etc/hostname').read())")       # the code interpreter
        print("hidden file:", f"{r.error.name}: {r.error.value}" if r.error else r.stdout)
        m = sbx.get_metrics()
        print(f"metrics: {m.memory_bytes} bytes, {m.pids} pids, {m.violations} violations, "
              f"{len(m.history)} samples")

    try:
        Sandbox.create(policy=Policy().memory("lots"))
    except InvalidRequestError as e:
        print("refused:", e)


if __name__ == "__main__":
    main()
