"""run_code: a stateful code interpreter like E2B's: variables live on between calls, the
last expression's value comes back, a chart comes back as a PNG (and its data), and an
error in the code is a result (name, value, traceback), not an exception.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/run_code.py

Python needs ipykernel in the sandbox (the code-interpreter image, docs/interpreter.md).
"""
import base64

from safehouse import Sandbox


def main() -> None:
    with Sandbox.create(timeout=120) as sbx:
        r = sbx.run_code("import math\nn = math.factorial(20)\nn")
        print("python:", r.text)

        r = sbx.run_code("n // 20")  # the kernel kept n
        print("from the previous call:", r.text)

        r = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16]); plt.title('squares'); None")
        chart = next(x for x in r.results if x.png)
        print(f"chart: {len(base64.b64decode(chart.png))} PNG bytes, {chart.chart['type']} "
              f"'{chart.chart['title']}' with {len(chart.chart['elements'][0]['points'])} points")

        r = sbx.run_code("1 / 0")
        print(f"error result: {r.error.name}: {r.error.value}")

        r = sbx.run_code("echo shell says $((6 * 7))", language="bash")
        print(r.stdout.strip())


if __name__ == "__main__":
    main()
