"""AsyncSandbox's newer surface: run_code, PTY, watch, metrics, events, freeze/thaw,
kill-all, keys and audit through AsyncAdmin, 64 MiB streamed both ways."""
import asyncio
import hashlib
import os
import time

import pytest

safehouse = pytest.importorskip("safehouse")
from safehouse import (AsyncAdmin, AsyncSandbox, AuthenticationError, FilesystemEventType,  # noqa: E402
                       ForbiddenError, NotFoundError, PtySize, SandboxFrozenError, WriteEntry)

MiB = 1 << 20


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_async_run_code_pty_metrics(daemon):
    async def main():
        async with await AsyncSandbox.create(timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            r = await s.run_code("print(2 ** 10)")
            assert (r.stdout, r.error) == ("1024\n", None)
            r = await s.run_code("raise KeyError('bad input')")
            assert (r.error.name, r.error.value) == ("KeyError", "'bad input'")

            out = bytearray()

            async def on_data(b):
                out.extend(b)

            term = await s.pty.create(PtySize(24, 80), on_data=on_data, cmd=["/bin/sh"], envs={"PS1": "$ "})
            waiter = asyncio.ensure_future(term.wait(timeout=30, raise_on_error=False))
            await s.pty.send_stdin(term.pid, b"echo hi\n")
            await until(lambda: b"hi\r\n" in out, what="pty echo")
            await term.resize(PtySize(33, 99))
            await s.pty.send_stdin(term.pid, b"stty size\n")
            await until(lambda: b"33 99" in out, what="resize")
            await s.pty.resize(term.pid, PtySize(20, 70))
            await s.pty.send_stdin(term.pid, b"stty size\n")
            await until(lambda: b"20 70" in out, what="resize by pid")
            await s.pty.send_stdin(term.pid, b"exit 3\n")
            r = await waiter
            assert r.exit_code == 3 and term.exit_code == 3

            term = await s.pty.create(cmd=["sleep", "60"])
            assert await s.pty.kill(term.pid) is True
            assert (await term.wait(timeout=10, raise_on_error=False)).signal == 9

            term = await s.pty.create(cmd=["/bin/sh", "-c", "echo early; read x; echo got-$x"])
            await term.disconnect()
            again = await s.pty.connect(term.pid)
            await s.pty.send_stdin(term.pid, b"xyz\n")
            r = await again.wait(timeout=10)
            assert "early" in r.stdout and "got-xyz" in r.stdout
            with pytest.raises(NotFoundError):
                await s.pty.connect(999999)
            term = await s.pty.create(cmd=["sleep", "60"], timeout=0.3)
            assert (await term.wait(timeout=10, raise_on_error=False)).signal == 9

            m = await s.get_metrics()
            assert m.state == "running" and m.memory_bytes > 0 and m.pids >= 1
    run(main())


def test_async_watch_and_events(daemon, tag):
    async def main():
        s = await AsyncSandbox.create(timeout=60)
        daemon.created.append((daemon.admin_key, s.id))
        await s.files.make_dir("/workspace/aw")
        seen = []
        handle = await s.files.watch_dir("/workspace/aw", on_event=seen.append)
        await s.commands.run("echo 1 > /workspace/aw/made-inside")
        await until(lambda: any(e.name == "made-inside" and e.type == FilesystemEventType.CREATE for e in seen),
                    what="watch event")
        await handle.stop()
        async with await s.files.watch_dir("/workspace/aw") as h2:
            await s.files.write("/workspace/aw/via-api", "x")
            async for ev in h2:
                assert ev.name == "via-api"
                break
            await s.files.remove("/workspace/aw/via-api")
            polled = []
            await until(lambda: polled.extend(h2.get_new_events()) or
                        any(e.type == FilesystemEventType.REMOVE for e in polled), what="polled delete")
        with pytest.raises(NotFoundError):
            await s.files.watch_dir("/workspace/none")

        marker = f"amark-{tag}"
        async with s.events(timeout=30) as events:
            await s.commands.run(f"echo {marker} >/dev/null")
            async for ev in events:
                if ev.kind == "proc.exec" and marker in str(ev.data):
                    break
        replay = [e async for e in s.events(follow=False, timeout=10)]
        assert replay[0].kind == "sandbox.created" and replay[0].seq == 1

        async with AsyncSandbox.all_events(replay=False, timeout=30) as every:
            await s.kill()
            async for ev in every:
                if ev.sandbox == s.id and ev.kind == "sandbox.killed":
                    break
        await s.close()
    run(main())


def test_async_freeze_keys_kill_all_audit(daemon, tag):
    async def main():
        async with AsyncAdmin() as admin:
            key = await admin.create_key(f"a{tag}")
            assert key.key and key.id in {k.id for k in await admin.list_keys()}
            with pytest.raises(ForbiddenError):
                await AsyncAdmin(api_key=key.key).create_key("x")
            s = await AsyncSandbox.create(timeout=60, api_key=key.key)
            daemon.created.append((key.key, s.id))
            assert (await s.freeze()).state == "frozen"
            with pytest.raises(SandboxFrozenError):
                await s.commands.run("true")
            assert (await s.thaw()).state == "running"
            assert (await s.freeze()).state == "frozen" and (await s.thaw()).state == "running"
            res = await AsyncSandbox.kill_all(api_key=key.key)
            assert res.killed == 1 and (await s.get_info()).state == "killed"
            records = await admin.audit(sandbox=s.id, kind="api")
            assert any("/freeze" in str(r) for r in records)
            await admin.revoke_key(key.id)
            with pytest.raises(AuthenticationError):
                await AsyncSandbox.list(api_key=key.key)
            await s.close()
    run(main())


def test_async_64mib_streamed_both_ways(daemon, tmp_path):
    src = tmp_path / "up.bin"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    want = hashlib.sha256(src.read_bytes()).hexdigest()

    async def main():
        async with await AsyncSandbox.create(timeout=120) as s:
            daemon.created.append((daemon.admin_key, s.id))
            with open(src, "rb") as f:
                assert (await s.files.write("/workspace/big", f)).size == 64 * MiB
            infos = await s.files.write_files([WriteEntry("/workspace/w1", "1"), WriteEntry("/workspace/w2", b"22")])
            assert [i.size for i in infos] == [1, 2]
            h = hashlib.sha256()
            async for chunk in await s.files.read("/workspace/big", format="stream"):
                h.update(chunk)
            assert h.hexdigest() == want
            assert (await s.commands.run("sha256sum /workspace/big")).stdout.split()[0] == want
    run(main(), timeout=120)


def test_async_request_port_and_admin_extras(daemon):
    from safehouse import PortError

    async def main():
        async with await AsyncSandbox.create(timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            with pytest.raises(PortError):
                await s.request_port(8124)
            await s.files.write("/workspace/w/hi.txt", "async hi")
            await s.commands.run("cd /workspace/w && exec python3 -m http.server 8124 --bind 127.0.0.1",
                                 background=True)
            deadline = time.monotonic() + 15
            while True:
                try:
                    r = await s.request_port(8124, "GET", "/hi.txt", timeout=5)
                    break
                except PortError:
                    assert time.monotonic() < deadline, "http.server did not start"
                    await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.text == "async hi"
            assert (await s.request_port(8124, "POST", "/")).status_code == 501  # http.server's own answer
        async with AsyncAdmin() as admin:
            assert await admin.health() is True and "safehouse_sandboxes" in await admin.prometheus()
            q = await admin.quota()
            assert q["tenant"] == "admin" and "usage" in q and "limits" in q, q
    run(main())


def test_async_class_level_calls_by_id(daemon):
    async def main():
        s = await AsyncSandbox.create(timeout=60)
        daemon.created.append((daemon.admin_key, s.id))
        assert (await AsyncSandbox.get_info(s.id)).state == "running"
        assert (await AsyncSandbox.set_timeout(s.id, 900)).id == s.id
        assert await AsyncSandbox.kill(s.id) is True
        assert (await s.get_info()).state == "killed"
        assert await AsyncSandbox.kill("sb_" + "e" * 26) is False
        await s.close()
    run(main())
