"""Quickstart: create a sandbox, run Python code in it, write and read a file, kill it.

    pip install safehouse-runtime && python3 quickstart.py     # starts a local daemon
    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 quickstart.py

Without SAFEHOUSE_URL and SAFEHOUSE_API_KEY the SDK starts (or reuses) a per-user daemon.
Limits (memory, pids, ...) are in policy_builder.py: a rootless daemon (not root, cgroup v1)
refuses the ones it cannot enforce.
"""
from safehouse import CommandExitException, Sandbox


def main() -> None:
    with Sandbox.create(timeout=120, metadata={"example": "quickstart"}) as sbx:
        print("sandbox", sbx.id)

        code = "import sys, platform; print('hello from python', platform.python_version()); print(sum(range(10)))"
        r = sbx.commands.run(["python3", "-c", code])
        print(r.stdout, end="")
        print(f"exit {r.exit_code}, wall {r.wall_ms} ms, cpu {r.cpu_ms} ms, peak memory {r.peak_memory_bytes} bytes")

        sbx.files.write("/workspace/notes.txt", "written from the SDK\n")
        print("read back:", sbx.files.read("/workspace/notes.txt"), end="")
        r = sbx.commands.run("wc -c < /workspace/notes.txt")
        print("size seen inside:", r.stdout.strip())

        try:
            sbx.commands.run("echo oops >&2; exit 3")
        except CommandExitException as e:
            print(f"failed as expected: exit {e.exit_code}, stderr {e.stderr.strip()!r}")
    # leaving the block killed the sandbox
    print("killed:", not sbx.is_running())


if __name__ == "__main__":
    main()
