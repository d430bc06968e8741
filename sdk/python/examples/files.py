"""Files: write, read, list, stat, rename, remove, watch a directory, and stream a large file
up and down without holding it in memory.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/files.py
"""
import hashlib
import os
import tempfile
import time

from safehouse import Sandbox


def main() -> None:
    with Sandbox.create(timeout=120) as sbx:
        sbx.files.write("/workspace/project/README.md", "# hello\n")
        print(sbx.files.read("/workspace/project/README.md"), end="")
        sbx.files.make_dir("/workspace/project/src")
        for entry in sbx.files.list("/workspace/project"):
            print(f"  {entry.type.value:4} {entry.name}")
        sbx.files.rename("/workspace/project/README.md", "/workspace/project/README.txt")
        print("renamed:", sbx.files.exists("/workspace/project/README.txt"))

        # watch: changes made by commands inside the sandbox arrive as events
        events = []
        with sbx.files.watch_dir("/workspace/project", on_event=events.append, recursive=True):
            sbx.commands.run("echo 'print(1)' > /workspace/project/src/main.py")
            deadline = time.monotonic() + 10
            while not events and time.monotonic() < deadline:
                time.sleep(0.05)
        print("watched:", sorted({f"{e.type.value} {e.name}" for e in events})[0])

        # a 16 MiB file, streamed both ways
        with tempfile.TemporaryFile() as f:
            f.write(os.urandom(16 << 20))
            f.seek(0)
            want = hashlib.sha256(f.read()).hexdigest()
            f.seek(0)
            info = sbx.files.write("/workspace/blob.bin", f)
        got = hashlib.sha256()
        for chunk in sbx.files.read("/workspace/blob.bin", format="stream"):
            got.update(chunk)
        print(f"uploaded {info.size} bytes; checksum round trip ok: {got.hexdigest() == want}")

        sbx.files.remove("/workspace/project")
        print("removed:", not sbx.files.exists("/workspace/project"))


if __name__ == "__main__":
    main()
