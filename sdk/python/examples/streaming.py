"""Streaming and background processes: output callbacks, iterating a handle, stdin,
signals, a PTY, and the sandbox's event stream.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/streaming.py
"""
import threading

from safehouse import PtySize, Sandbox


def main() -> None:
    with Sandbox.create(timeout=120) as sbx:
        # 1. stream a foreground command's output as it is produced
        sbx.commands.run("for i in 1 2 3; do echo tick $i; sleep 0.1; done",
                         on_stdout=lambda text: print("stdout>", text, end=""))

        # 2. a background process: iterate its output, then wait for the result
        handle = sbx.commands.run("echo started; sleep 0.2; echo done >&2", background=True)
        for stdout, stderr, _ in handle:
            print("chunk:", repr(stdout or stderr))
        print("background exit:", handle.wait().exit_code)

        # 3. stdin and signals
        cat = sbx.commands.run("cat", background=True)
        cat.send_stdin("fed through stdin\n")
        cat.close_stdin()
        print("cat said:", cat.wait(timeout=10).stdout.strip())
        sleeper = sbx.commands.run("trap 'echo got TERM; exit 0' TERM; sleep 30 & wait", background=True)
        sbx.commands.run("sleep 0.3")
        sleeper.signal("SIGTERM")
        print("sleeper:", sleeper.wait(timeout=10).stdout.strip())

        # 4. a terminal: type into a shell, resize it, exit
        screen = bytearray()
        term = sbx.pty.create(PtySize(rows=24, cols=80), on_data=screen.extend, cmd=["/bin/sh"])
        done = threading.Thread(target=lambda: term.wait(timeout=30), daemon=True)
        done.start()
        term.resize(PtySize(rows=40, cols=100))
        sbx.pty.send_stdin(term.pid, b"stty size; exit\n")
        done.join(30)
        print("pty saw size:", "40 100" in screen.decode(errors="replace"))

        # 5. the sandbox's events so far (follow=True would go on live)
        kinds = [ev.kind for ev in sbx.events(follow=False, timeout=10)]
        print("events:", kinds[0], "...", f"{kinds.count('proc.exec')} proc.exec")


if __name__ == "__main__":
    main()
