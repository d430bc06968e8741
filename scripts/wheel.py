#!/usr/bin/env python3
"""Writes the platform wheel of safehouse: the Python SDK and the static `safehouse` binary.

Layout (the one ruff, uv and maturin's "bin" wheels use): the SDK's package at the top, the
binary as `<dist>-<version>.data/scripts/safehouse`, which pip installs executable into the
environment's bin directory. The platform tag comes from the binary's ELF header, and the
binary must be static (no program interpreter): it then runs on any Linux of that
architecture, whatever its libc.

    python3 scripts/wheel.py --binary target/safehouse --sdk sdk/python --out target/wheels
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import struct
import sys
import tomllib
import zipfile
from pathlib import Path

#: ELF e_machine -> the wheel's architecture name.
MACHINES = {62: "x86_64", 183: "aarch64"}
#: A fixed timestamp (the zip format's earliest) so that the same inputs give the same bytes.
EPOCH = (1980, 1, 1, 0, 0, 0)


def elf_arch(binary: bytes, name: str) -> str:
    """The architecture of a static ELF executable; refuses a dynamic one with the reason."""
    if binary[:4] != b"\x7fELF" or binary[4] != 2 or binary[5] != 1:
        sys.exit(f"wheel: {name} is not a 64-bit little-endian ELF executable")
    (machine,) = struct.unpack_from("<H", binary, 18)
    (phoff,) = struct.unpack_from("<Q", binary, 32)
    phentsize, phnum = struct.unpack_from("<HH", binary, 54)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", binary, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader and a matching libc
            sys.exit(f"wheel: {name} is dynamically linked; build the static binary with scripts/build")
    try:
        return MACHINES[machine]
    except KeyError:
        sys.exit(f"wheel: {name} is for ELF machine {machine}, which this script has no wheel tag for")


def metadata(project: dict, readme: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project['description']}",
        f"Requires-Python: {project['requires-python']}",
        f"License: {project['license']['text']}",
    ]
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {d}; extra == \"{extra}\"" for d in deps]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--sdk", type=Path, required=True, help="the SDK's directory (with pyproject.toml)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    project = tomllib.loads((a.sdk / "pyproject.toml").read_text())["project"]
    cargo = tomllib.loads((a.sdk.parent.parent / "Cargo.toml").read_text())
    cargo_version = cargo["workspace"]["package"]["version"]
    if project["version"] != cargo_version:
        sys.exit(f"wheel: the SDK says version {project['version']} and Cargo.toml {cargo_version}; "
                 "make them equal (the wheel carries both)")
    binary = a.binary.resolve().read_bytes()
    arch = elf_arch(binary, str(a.binary))
    # A static binary needs no libc from the host; manylinux2014 is the tag pip accepts on
    # every glibc distribution of the last decade.
    tag = f"py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}"
    dist = project["name"].replace("-", "_")
    version = project["version"]
    info = f"{dist}-{version}.dist-info"

    files: list[tuple[str, bytes, int]] = []
    pkg = a.sdk / "src" / "safehouse"
    for f in sorted(pkg.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            files.append((f"safehouse/{f.relative_to(pkg).as_posix()}", f.read_bytes(), 0o644))
    files.append((f"{dist}-{version}.data/scripts/safehouse", binary, 0o755))
    readme = (a.sdk / project.get("readme", "README.md")).read_text()
    files.append((f"{info}/METADATA", metadata(project, readme).encode(), 0o644))
    wheel_meta = ("Wheel-Version: 1.0\nGenerator: safehouse scripts/wheel.py\nRoot-Is-Purelib: false\n"
                  f"Tag: {tag}\n")
    files.append((f"{info}/WHEEL", wheel_meta.encode(), 0o644))
    record = "\n".join([record_line(p, d) for p, d, _ in files] + [f"{info}/RECORD,,"]) + "\n"
    files.append((f"{info}/RECORD", record.encode(), 0o644))

    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob(f"{dist}-*.whl"):
        old.unlink()
    target = a.out / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for path, data, mode in files:
            zi = zipfile.ZipInfo(path, EPOCH)
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    print(target)


if __name__ == "__main__":
    main()
