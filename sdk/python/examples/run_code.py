"""run_code: run snippets of Python and shell like E2B's code interpreter; an error in the
code comes back as a result (exit code, traceback in stderr), not as an exception.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/run_code.py
"""
from safehouse import Sandbox


def main() -> None:
    with Sandbox.create(timeout=120) as sbx:
        r = sbx.run_code("import math; print(math.factorial(20))")
        print("python:", r.stdout.strip(), f"(exit {r.exit_code}, {r.wall_ms} ms)")

        # state lives in files between runs (each run is a fresh interpreter)
        sbx.run_code("import json; json.dump({'n': 41}, open('/workspace/state.json', 'w'))")
        r = sbx.run_code("import json; print(json.load(open('/workspace/state.json'))['n'] + 1)")
        print("from the previous run:", r.stdout.strip())

        r = sbx.run_code("1 / 0")
        last = r.stderr.strip().splitlines()[-1]
        print(f"error result: {r.error}; {last}")

        r = sbx.run_code("echo shell says $((6 * 7))", language="bash")
        print(r.stdout.strip())


if __name__ == "__main__":
    main()
