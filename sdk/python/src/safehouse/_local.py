"""Local mode: with neither SAFEHOUSE_URL nor SAFEHOUSE_API_KEY set (and no url=/api_key=),
the SDK uses the per-user daemon that the `safehouse` binary starts or reuses
(`safehouse local start`; the wheel installs the binary next to this package's interpreter).
The binary owns the job (lock file, stale daemons, the key file): the SDK only asks it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import threading
from pathlib import Path
from typing import Optional, Tuple

from .exceptions import SafehouseError

_lock = threading.Lock()
_cached: Optional[Tuple[str, str]] = None


def find_binary() -> Optional[str]:
    """SAFEHOUSE_BIN, the binary this package's wheel installed, or `safehouse` on PATH."""
    explicit = os.environ.get("SAFEHOUSE_BIN")
    if explicit:
        return explicit
    scripts = sysconfig.get_path("scripts")
    if scripts and os.access(Path(scripts) / "safehouse", os.X_OK):
        return str(Path(scripts) / "safehouse")
    return shutil.which("safehouse")


def local_daemon() -> Tuple[str, str]:
    """(url, key) of the per-user local daemon, started on the first call of the process
    (the binary says so once on stderr) and reused after."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        binary = find_binary()
        if binary is None:
            raise SafehouseError(
                "no daemon given (SAFEHOUSE_URL and SAFEHOUSE_API_KEY are unset) and no `safehouse` binary "
                "found to start a local one: pip install safehouse-runtime (the wheel carries it), put "
                "`safehouse` on PATH or name it in SAFEHOUSE_BIN, or set SAFEHOUSE_URL and SAFEHOUSE_API_KEY")
        try:
            p = subprocess.run([binary, "local", "start", "--json"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SafehouseError(f"could not start the local safehouse daemon with {binary}: {e}") from None
        if p.returncode != 0:
            raise SafehouseError(f"could not start the local safehouse daemon ({binary} local start failed with "
                                 f"exit {p.returncode}; its message is on stderr above)")
        info = json.loads(p.stdout)
        try:
            key = Path(info["key_file"]).read_text().strip()
        except OSError as e:
            raise SafehouseError(f"cannot read the local daemon's key {info['key_file']}: {e}") from None
        _cached = (info["url"], key)
        return _cached
