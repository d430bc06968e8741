"""AsyncSandbox: the same surface as Sandbox, awaited (run with asyncio.run: no plugin needed)."""
import asyncio
import hashlib
import io
import os
import time

import pytest

safehouse = pytest.importorskip("safehouse")
from safehouse import (AsyncSandbox, AuthenticationError, CommandExitException, FileType,  # noqa: E402
                       InvalidRequestError, NotFoundError, SafehouseTimeoutError, SandboxNotRunningError)

MiB = 1 << 20


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_async_lifecycle(daemon, tag):
    async def main():
        s = await AsyncSandbox.create(timeout=60, metadata={"suite": "sdk-async", "t": tag}, env={"X": "1"})
        daemon.created.append((daemon.admin_key, s.id))
        info = await s.get_info()
        assert info.state == "running" and info.metadata["t"] == tag and await s.is_running()
        assert [i.id for i in await AsyncSandbox.list(metadata={"t": tag}, state="running")] == [s.id]
        later = await s.set_timeout(900)
        assert (later.expires_at - info.expires_at).total_seconds() > 700
        other = await AsyncSandbox.connect(s.id)
        assert (await other.commands.run("echo $X")).stdout == "1\n"
        await other.close()
        async with s:
            pass
        assert not await s.is_running() and (await s.get_info()).state == "killed"
        assert await s.kill() is True
        with pytest.raises(SandboxNotRunningError):
            await s.commands.run("true")
        await s.close()
        with pytest.raises(NotFoundError):
            await AsyncSandbox.connect("sb_" + "b" * 26)
        with pytest.raises(AuthenticationError):
            await AsyncSandbox.list(api_key="sh_" + "y" * 32)
        with pytest.raises(InvalidRequestError) as e:
            await AsyncSandbox.create(policy={"limits": {"memroy": "1GiB"}})
        assert "memroy" in str(e.value)
    run(main())


def test_async_commands(daemon):
    async def main():
        async with await AsyncSandbox.create(timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            r = await s.commands.run(["sh", "-c", "echo $A; cat; pwd"], envs={"A": "a"}, stdin="in\n", cwd="/tmp")
            assert (r.stdout, r.exit_code, r.timed_out) == ("a\nin\n/tmp\n", 0, False) and r.wall_ms is not None
            with pytest.raises(CommandExitException) as e:
                await s.commands.run("echo no >&2; exit 5")
            assert e.value.exit_code == 5 and e.value.stderr == "no\n"
            r = await s.commands.run("sleep 10", timeout=0.3, raise_on_error=False)
            assert r.timed_out and r.signal == 9

            # background: async iteration, then wait for the result
            h = await s.commands.run("echo one; sleep 0.2; echo two >&2", background=True)
            chunks = [c async for c in h]
            assert "".join(c[0] or "" for c in chunks) == "one\n" and "".join(c[1] or "" for c in chunks) == "two\n"
            assert (await h.wait()).exit_code == 0
            assert any(p.pid == h.pid and not p.running for p in await s.commands.list())

            # streaming callbacks (sync and async ones) arrive before the end
            seen = []

            async def on_err(text):
                seen.append((time.monotonic(), "e", text))

            t0 = time.monotonic()
            r = await s.commands.run("for i in 1 2; do echo o$i; echo e$i >&2; sleep 0.4; done",
                                     on_stdout=lambda t: seen.append((time.monotonic(), "o", t)), on_stderr=on_err)
            end = time.monotonic()
            assert r.stdout == "o1\no2\n" and r.stderr == "e1\ne2\n"
            assert "".join(t for _, k, t in seen if k == "o") == r.stdout
            assert min(t for t, _, _ in seen) - t0 < (end - t0) - 0.3

            # stdin, signals, kill, client timeout
            h = await s.commands.run("cat", background=True)
            await h.send_stdin("abc\n")
            await h.close_stdin()
            assert (await h.wait(timeout=10)).stdout == "abc\n"
            h = await s.commands.run("sleep 60", background=True)
            with pytest.raises(SafehouseTimeoutError):
                await h.wait(timeout=0.3)
            assert await s.commands.kill(h.pid) is True
            assert await s.commands.kill(999999) is False
            h2 = await s.commands.connect(h.pid)
            r = await h2.wait(timeout=10, raise_on_error=False)
            assert r.signal == 9
    run(main())


def test_async_files(daemon):
    async def main():
        async with await AsyncSandbox.create(timeout=60) as s:
            daemon.created.append((daemon.admin_key, s.id))
            assert (await s.files.write("/workspace/x/a.txt", "héllo")).size == 6
            assert await s.files.read("/workspace/x/a.txt") == "héllo"
            assert bytes(await s.files.read("/workspace/x/a.txt", format="bytes")) == "héllo".encode()
            payload = os.urandom(3 * MiB + 7)
            info = await s.files.write("/workspace/big", io.BytesIO(payload))
            assert info.size == len(payload)
            h = hashlib.sha256()
            async for chunk in await s.files.read("/workspace/big", format="stream"):
                h.update(chunk)
            assert h.hexdigest() == hashlib.sha256(payload).hexdigest()
            assert await s.files.make_dir("/workspace/d/e") is True
            assert await s.files.make_dir("/workspace/d/e") is False
            entries = {e.name: e for e in await s.files.list("/workspace")}
            assert entries["x"].type == FileType.DIR and entries["big"].size == len(payload)
            assert "/workspace/d/e" in {e.path for e in await s.files.list("/workspace", depth=2)}
            assert (await s.files.get_info("/workspace/x/a.txt")).type == FileType.FILE
            assert (await s.files.rename("/workspace/x/a.txt", "/workspace/b.txt")).path == "/workspace/b.txt"
            assert await s.files.exists("/workspace/b.txt") and not await s.files.exists("/workspace/x/a.txt")
            await s.files.remove("/workspace/d")
            assert not await s.files.exists("/workspace/d")
            with pytest.raises(NotFoundError) as e:
                await s.files.read("/workspace/none")
            assert str(e.value) == "/workspace/none: no such file or directory"
    run(main())
