"""The OpenAPI document, checked against the running daemon: the served document is the
one in the repository, and every operation it lists exists on the server (answers with
something other than the router's 'no such route' 404/405)."""
import json
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_served_document_is_the_repository_file(daemon, api):
    r = api.get("/v1/openapi.json", key=None)
    assert r.status == 200, r
    served = r.json()
    assert served == json.loads((REPO / "docs" / "openapi.json").read_text())
    assert served["openapi"].startswith("3.")


def test_every_documented_operation_exists(api, sandbox):
    doc = json.loads((REPO / "docs" / "openapi.json").read_text())
    sid = sandbox["id"]
    checked = 0
    for path, ops in doc["paths"].items():
        concrete = path.replace("{id}", sid).replace("{pid}", "1").replace("{port}", "8080")
        concrete = re.sub(r"\{[^}]+\}", "x", concrete)
        for method in ops:
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            if path.endswith("/attach") or path.endswith("/watch") or path.endswith("/events") \
                    or (method == "delete" and path == "/v1/sandboxes/{id}") \
                    or path in ("/v1/kill-all", "/v1/sandboxes/{id}/freeze", "/v1/freeze-all", "/v1/thaw-all",
                                "/v1/metrics"):
                continue  # upgrades, streams, the sandbox's own deletion and the stops are exercised elsewhere
            r = api.request(method.upper(), concrete, body={} if method in ("post", "put") else None,
                            query={"path": "/workspace"} if "files" in path or "/fs" in path else None)
            is_json = r.headers.get("content-type", "").startswith("application/json")
            err = r.json().get("error", {}) if is_json and r.body[:1] == b"{" else {}
            assert not (r.status == 405 and err.get("code") == "method_not_allowed"), f"{method.upper()} {path}: {r}"
            assert not (r.status == 404 and "no such route" in err.get("message", "")), f"{method.upper()} {path}: {r}"
            checked += 1
    assert checked >= 15, checked
