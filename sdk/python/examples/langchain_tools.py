"""LangChain tools over a sandbox (pip install "./sdk/python[langchain]"). The tools are
invoked directly here, as an agent's model would call them.

    SAFEHOUSE_URL=http://127.0.0.1:8700 SAFEHOUSE_API_KEY=sh_... python3 sdk/python/examples/langchain_tools.py
"""
from safehouse import Policy, Sandbox
from safehouse.integrations.langchain import SafehouseToolkit


def main() -> None:
    policy = Policy().memory("512MiB").allow_tools("/bin/sh", "/usr/bin/python3*", "/bin/cat")
    with Sandbox.create(policy=policy, timeout=120) as sbx:
        tools = {t.name: t for t in SafehouseToolkit(sandbox=sbx).get_tools()}
        for name, tool in tools.items():
            print(f"{name}: {sorted(tool.args)}")
        print(tools["safehouse_write_file"].invoke({"path": "/workspace/data.csv", "content": "a,b\n1,2\n3,4\n"}))
        print(tools["safehouse_python"].invoke(
            {"code": "import csv; rows = list(csv.DictReader(open('/workspace/data.csv')));"
                     " print(sum(int(r['b']) for r in rows))"}))
        print(tools["safehouse_shell"].invoke({"command": "cat /workspace/data.csv"}))
        # a denial explains itself to the model
        print(tools["safehouse_shell"].invoke({"command": "/usr/bin/env"}))


if __name__ == "__main__":
    main()
