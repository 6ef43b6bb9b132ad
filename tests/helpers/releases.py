"""Releases built the way a deploy tool builds them, and a daemon running them.

Releases are built under ``ROOT/releases/NAME``: ``app.py`` is a copy of
tests/apps/testapp.py (the good releases), exits 2 at boot after saying why
(``crash``), crashes as the primary only (``primary-crash``), answers 503 on /health
whatever its environment says (``sick``), or boots in about 1 s (``slow``).
:func:`web_app` runs ``python {release_dir}/app.py`` as primary and backup, one socket
each, with HTTP ready and health checks; :func:`start_site` starts a daemon on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import PYTHON, TESTAPP, RunningDaemon, free_port, http_get
from helpers.nginx import Nginx

APP = "web"

# --------------------------------------------------------------------------- releases

_WRAPPER = """\
import os
import runpy
import sys

{setup}
here = os.path.dirname(os.path.abspath(__file__))
sys.argv[0] = os.path.join(here, "testapp.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""

CRASH_REASON = "release crash: cannot read /etc/web/secrets.yaml (simulated)"

_CRASH = f"""\
import sys

print("release crash booting", flush=True)
print({CRASH_REASON!r}, flush=True)
sys.exit(2)
"""

PRIMARY_REASON = "release primary-crash: the primary's port 443 certificate is missing (simulated)"

_PRIMARY_CRASH = f"""\
import os
import runpy
import sys

if os.environ.get("SUPERVISOR_INSTANCE") == "primary":
    print({PRIMARY_REASON!r}, flush=True)
    sys.exit(3)
here = os.path.dirname(os.path.abspath(__file__))
sys.argv[0] = os.path.join(here, "testapp.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""

KINDS = {
    "good": None,
    # boots and serves as the backup (the canary passes), crashes at boot as the primary
    "primary-crash": _PRIMARY_CRASH,
    "crash": _CRASH,
    # env-independent: the wrapper overrides whatever the config's env says
    "sick": _WRAPPER.format(setup='os.environ["HEALTH_STATUS"] = "503"'),
    "slow": _WRAPPER.format(setup='os.environ["BOOT_DELAY"] = "1.0"'),
}


def make_release(root: Path, name: str, kind: str = "good") -> Path:
    """Build ``root/releases/NAME`` holding an ``app.py`` of the given kind."""
    path = root / "releases" / name
    path.mkdir(parents=True)
    shutil.copy(TESTAPP, path / "testapp.py")
    source = KINDS[kind]
    if source is None:
        shutil.copy(TESTAPP, path / "app.py")
    else:
        (path / "app.py").write_text(source)
    return path


def make_root(tmp_path: Path, current: str = "v1", kind: str = "good") -> Path:
    """A release root with its first release, ``current`` pointing at it."""
    root = tmp_path / "root"
    make_release(root, current, kind)
    os.symlink(os.path.join("releases", current), root / "current")
    return root


def web_app(
    root: Path, primary: int, backup: int, *, keep: int = 2, settle: float = 1.0
) -> dict[str, Any]:
    """The app under test: primary and backup on a socket each, from ``root``'s releases."""
    return {
        "command": [PYTHON, "{release_dir}/app.py"],
        "instances": ["primary", "backup"],
        "listen": {"primary": f"127.0.0.1:{primary}", "backup": f"127.0.0.1:{backup}"},
        "socket_activation": True,
        "ready": {"http": "http://{host}:{port}/", "timeout": 15},
        "health": {
            "http": "http://{host}:{port}/health",
            "interval": 1,
            "timeout": 2,
            "failures": 3,
        },
        "stop": {"timeout": 5},
        "release": {"root": str(root), "keep": keep, "settle": settle},
    }


@dataclass
class Site:
    """A running daemon with the web app, and where to look at it."""

    daemon: RunningDaemon
    root: Path
    primary: int
    backup: int

    @property
    def history_path(self) -> Path:
        return self.daemon.state_dir / "releases" / f"{APP}.json"

    def history(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.history_path.read_text())
        return data

    def current(self) -> str:
        return os.readlink(self.root / "current")

    def app_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.daemon.http_status()["apps"][APP]
        return status

    def served(self, port: int) -> dict[str, Any]:
        """What the instance on ``port`` says about itself (testapp's JSON body)."""
        code, body = http_get("127.0.0.1", port, "/")
        assert code == 200, (code, body)
        data: dict[str, Any] = json.loads(body)
        return data

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.daemon.supctl(*args)

    def assert_on(
        self,
        primary: str,
        backup: str,
        current: str,
        deployed: list[str],
        nginx: Nginx | None = None,
    ) -> None:
        """Each instance runs the release it should (status and its own answer),
        ``current`` points at ``current`` and the history file says ``deployed``."""
        app = self.app_status()
        for name, release, port in (
            ("primary", primary, self.primary),
            ("backup", backup, self.backup),
        ):
            inst = app["instances"][name]
            assert inst["state"] == "RUNNING", (name, inst)
            assert inst["release"] == release, (name, inst)
            body = self.served(port)
            assert body["release"] == release, (name, body)
            assert body["pid"] == inst["pid"], (name, body, inst)
        assert app["release"] == current, app
        assert app.get("deploy") is None, app
        assert self.current() == os.path.join("releases", current)
        history = self.history()
        assert (history["deployed"], history["current"]) == (deployed, current)
        assert set(history) <= {"deployed", "current", "outcome", "artifacts"}, history
        if nginx is not None:
            # both instances run the same release after a finished deploy, so whichever
            # nginx picks (the primary may sit out fail_timeout) says the same
            code, raw = http_get("127.0.0.1", nginx.port, "/")
            assert code == 200 and json.loads(raw)["release"] == primary, (code, raw)


def start_site(
    make_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    *,
    keep: int = 2,
    settle: float = 1.0,
    kind: str = "good",
) -> Site:
    root = make_root(tmp_path, kind=kind)
    primary, backup = free_port(), free_port()
    d = make_daemon({APP: web_app(root, primary, backup, keep=keep, settle=settle)})
    d.wait_running(APP, "primary", "backup", timeout=20)
    return Site(d, root, primary, backup)


def assert_failed(cp: subprocess.CompletedProcess[str], *expected: str) -> None:
    """supctl exited 1 and its output says each of ``expected``."""
    text = cp.stdout + cp.stderr
    assert cp.returncode == 1, f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def assert_ok(cp: subprocess.CompletedProcess[str]) -> None:
    assert cp.returncode == 0, f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
