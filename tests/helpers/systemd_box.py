"""A real systemd (PID 1) in a container, booted by the systemd-box tool that sits
beside the repository (../shared/tools/systemd-box: systemd-nspawn over a cached
minimal Debian; it installs its own packages on first use).

The box binds this checkout, the virtualenv and the Python install behind it at the
same paths, so the package runs inside unchanged. Booting needs root; a box already up
when the test run starts is someone else's and is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

SYSTEMD_BOX = REPO.parent / "shared" / "tools" / "systemd-box"


def box(*argv: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run ``systemd-box ARGV...``; its exit status and output."""
    return subprocess.run(
        [str(SYSTEMD_BOX), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def binds() -> list[str]:
    """What the box must see at the same paths: the checkout, the venv, the Python."""
    found = [str(REPO)]
    for path in (os.path.realpath(sys.prefix), sys.base_prefix):
        if not Path(path).is_relative_to(REPO) and path not in found:
            found.append(path)
    return found


def why_no_box() -> str | None:
    """Why this machine cannot boot the box for this run (None: it can)."""
    if os.geteuid() != 0:
        return "booting a systemd container (systemd-nspawn) needs root"
    if not os.access(SYSTEMD_BOX, os.X_OK):
        return f"the systemd-box tool is not beside the repository ({SYSTEMD_BOX})"
    if box("status", timeout=30).returncode == 0:
        return "a systemd-box is already up (someone else's binds): not touching it"
    return None
