"""The Ansible role in contrib/ansible, driven by the real engine over a simulated fleet.

Three hosts live on this machine, each with its own daemon, state_dir, config, venv
and loopback address (127.0.1.1-3, ``ansible_connection: local``). The install play
runs with ``supervisord_lite_service_manager: background`` (no systemd here: the
role starts the daemon as a detached process), from a wheelhouse built from this
checkout. nginx balances over every host's primary and backup while a steady load
runs through it: a fleet deploy of a good release refuses no request; a release that
fails readiness on host2 leaves host1 on it, host2 and host3 on the old one, the play
failed naming host2, and no request failed; the fleet rollback and the status play
report what each host then runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PYTHON,
    REPO,
    TESTAPP,
    descendants_of,
    free_port,
    http_get,
    pid_alive,
)
from helpers import create_time as proc_create_time
from helpers.load import Load, under_load
from helpers.nginx import PRIMARY_OPTS, Nginx, nginx_or_skip
from helpers.releases import web_app
from helpers.systemd_box import box

ANSIBLE_DIR = REPO / "contrib" / "ansible"
ANSIBLE_PLAYBOOK = Path(PYTHON).parent / "ansible-playbook"
APP = "web"
HOSTS = ("host1", "host2", "host3")
PLAY_TIMEOUT = 600.0
STOP_DEADLINE = 30.0

needs_ansible = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(),
    reason="ansible-playbook is not installed (pip install -e '.[test]')",
)

BAD_REASON = "release v3: cannot read /etc/web/host2.pem (simulated)"
# fails readiness (exits at boot) on host2 only, like a release that needs a file one
# host lacks; the same files are uploaded to every host
_BAD_ON_HOST2 = f"""\
import os
import runpy
import sys

if os.environ.get("FLEET_HOST") == "host2":
    print({BAD_REASON!r}, flush=True)
    sys.exit(2)
here = os.path.dirname(os.path.abspath(__file__))
sys.argv[0] = os.path.join(here, "testapp.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def build_release(where: Path, name: str, app_source: str | None = None) -> Path:
    """A release directory on the controller: what the deploy play uploads."""
    path = where / name
    path.mkdir(parents=True)
    shutil.copy(TESTAPP, path / "testapp.py")
    if app_source is None:
        shutil.copy(TESTAPP, path / "app.py")
    else:
        (path / "app.py").write_text(app_source)
    return path


@dataclass
class Host:
    name: str
    address: str
    base: Path
    http_port: int = field(default_factory=free_port)
    primary: int = field(default_factory=free_port)
    backup: int = field(default_factory=free_port)

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def root(self) -> Path:
        return self.base / "srv" / "web"

    @property
    def socket(self) -> Path:
        return self.state_dir / "supctl.sock"

    def vars(self, wheelhouse: Path) -> dict[str, Any]:
        app = web_app(self.root, self.primary, self.backup, settle=1.0)
        app["listen"] = {
            "primary": f"{self.address}:{self.primary}",
            "backup": f"{self.address}:{self.backup}",
        }
        app["env"] = {"FLEET_HOST": self.name}
        return {
            "ansible_host": self.address,
            "supervisord_lite_venv": str(self.base / "venv"),
            "supervisord_lite_config_dir": str(self.base / "etc"),
            "supervisord_lite_state_dir": str(self.state_dir),
            "supervisord_lite_http_listen": f"{self.address}:{self.http_port}",
            "supervisord_lite_supervisor_extra": {
                "log": {"format": "json"},
                "shutdown_timeout": 10,
            },
            "supervisord_lite_apps": {APP: app},
        }

    def status(self) -> dict[str, Any]:
        code, body = http_get(self.address, self.http_port, "/status")
        assert code == 200, (self.name, code, body)
        data: dict[str, Any] = json.loads(body)
        return data

    def releases(self) -> dict[str, str | None]:
        """instance -> release, as /status says, and each instance's own answer agrees."""
        app = self.status()["apps"][APP]
        out: dict[str, str | None] = {"current": app["release"]}
        for name, port in (("primary", self.primary), ("backup", self.backup)):
            inst = app["instances"][name]
            assert inst["state"] == "RUNNING", (self.name, name, inst)
            code, body = http_get(self.address, port, "/")
            assert code == 200 and json.loads(body)["release"] == inst["release"], (name, body)
            out[name] = inst["release"]
        return out

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state_dir / "supervisord-lite.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class Fleet:
    """The simulated hosts, their inventory, and the processes the role started."""

    def __init__(self, tmp_path: Path, wheelhouse: Path) -> None:
        self.tmp = tmp_path
        self.wheelhouse = wheelhouse
        self.hosts = [
            Host(name, f"127.0.1.{n}", tmp_path / name) for n, name in enumerate(HOSTS, 1)
        ]
        self.inventory = tmp_path / "inventory.yml"
        self.releases = tmp_path / "build"
        self.seen: dict[int, float | None] = {}  # pid -> create time: daemons and apps
        self.log = tmp_path / "plays.log"

    def prepare(self) -> None:
        for h in self.hosts:
            # the first release is in place before the daemon first starts
            first = h.root / "releases" / "v1"
            first.parent.mkdir(parents=True)
            shutil.copytree(build_release(self.tmp / f"{h.name}-v1", "v1"), first)
            os.symlink(os.path.join("releases", "v1"), h.root / "current")
        inventory = {
            "supervisord_lite": {
                "hosts": {h.name: h.vars(self.wheelhouse) for h in self.hosts},
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": PYTHON,
                    "ansible_become": False,
                    "supervisord_lite_service_manager": "background",
                    "supervisord_lite_os_packages": [],  # this machine has them
                    "supervisord_lite_package": "supervisord-lite",
                    "supervisord_lite_pip_extra_args": (
                        f"--no-index --find-links {self.wheelhouse}"
                    ),
                },
            }
        }
        # JSON is YAML
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n")

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.tmp / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.tmp / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
        }
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), playbook, *extra]
        began = time.monotonic()
        cp = subprocess.run(
            argv,
            cwd=ANSIBLE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PLAY_TIMEOUT,
            check=False,
        )
        with self.log.open("a") as f:
            f.write(f"\n===== {' '.join(argv[3:])}: exit {cp.returncode} ")
            f.write(f"in {time.monotonic() - began:.1f}s\n{cp.stdout}\n{cp.stderr}\n")
        self.remember()
        return cp

    def remember(self) -> None:
        """Note every daemon and its process tree, to stop and check them at the end."""
        for h in self.hosts:
            pid = h.daemon_pid()
            if pid is None or not pid_alive(pid):
                continue
            for p in [pid, *descendants_of(pid)]:
                if p not in self.seen:
                    self.seen[p] = proc_create_time(p)

    def close(self) -> list[str]:
        """SIGTERM every daemon (by pid, from its pidfile); what was left behind."""
        self.remember()
        daemons = [p for h in self.hosts if (p := h.daemon_pid()) is not None]
        for pid in daemons:
            if pid in self.seen and pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE
        while time.monotonic() < deadline and any(self._alive(p) for p in self.seen):
            time.sleep(0.05)
        leftovers = [p for p in self.seen if self._alive(p)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"pid {p}" for p in leftovers]

    def _alive(self, pid: int) -> bool:
        return pid_alive(pid) and proc_create_time(pid) == self.seen[pid]


def recap(cp: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, failed, ...}."""
    found: dict[str, dict[str, int]] = {}
    for line in cp.stdout.split("PLAY RECAP")[-1].splitlines():
        m = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if m:
            found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return found


def out(cp: subprocess.CompletedProcess[str]) -> str:
    return f"exit {cp.returncode}\n{cp.stdout[-6000:]}\n{cp.stderr[-3000:]}"


@contextlib.contextmanager
def fleet_under_load(port: int, figures: dict[str, str], what: str) -> Iterator[Load]:
    """:func:`under_load` paced for a fleet play (minutes long); its figures kept."""
    with under_load(port, what, 30, threads=2, pause=0.02, max_seconds=240) as load:
        yield load
    figures[what] = load.summary()


@pytest.fixture(scope="module")
def wheelhouse() -> Iterator[Path]:
    """This checkout and its dependencies as wheels: what the install plays install,
    built once for the fleet and the systemd test. Under the checkout, which the
    systemd-box binds (the box cleans its own /tmp at boot)."""
    where = REPO / "build" / "fleet-wheelhouse"
    shutil.rmtree(where, ignore_errors=True)
    cp = subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(where), REPO],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@needs_ansible
@pytest.mark.parametrize("playbook", ["install.yml", "deploy.yml", "rollback.yml", "status.yml"])
def test_playbook_syntax(tmp_path: Path, playbook: str) -> None:
    """In the default run (quick): each playbook and the role parse for ansible-playbook."""
    fleet = Fleet(tmp_path, tmp_path / "wheelhouse")
    fleet.prepare()
    cp = fleet.play("--syntax-check", playbook, "-e", "app=web release=v1")
    assert cp.returncode == 0, out(cp)


@needs_ansible
@pytest.mark.fleet
@pytest.mark.nginx
@pytest.mark.timeout(900)
def test_fleet_install_deploy_rollback_status(tmp_path: Path, wheelhouse: Path) -> None:
    binary = nginx_or_skip()
    fleet = Fleet(tmp_path, wheelhouse)
    fleet.prepare()
    figures: dict[str, str] = {}
    nginx = None
    try:
        # install, then again: nothing to change
        cp = fleet.play("install.yml")
        assert cp.returncode == 0, out(cp)
        for h in fleet.hosts:
            assert h.releases() == {"current": "v1", "primary": "v1", "backup": "v1"}
        cp = fleet.play("install.yml")
        assert cp.returncode == 0, out(cp)
        again = recap(cp)
        assert set(again) == set(HOSTS), out(cp)
        assert all(r["changed"] == 0 and r["failed"] == 0 for r in again.values()), again

        # nginx over every host's primary and backup (each host's sockets are its own)
        servers = [
            f"{h.address}:{p}{PRIMARY_OPTS}" for h in fleet.hosts for p in (h.primary, h.backup)
        ]
        nginx = Nginx(binary, tmp_path / "nginx", servers=servers, tries=3).start()

        # a good release, host by host, under load: no request refused
        v2 = build_release(fleet.releases, "v2")
        with fleet_under_load(nginx.port, figures, "deploy v2"):
            cp = fleet.play("deploy.yml", "-e", f"app={APP} release=v2 src={v2}")
        assert cp.returncode == 0, out(cp)
        for h in fleet.hosts:
            assert h.releases() == {"current": "v2", "primary": "v2", "backup": "v2"}, h.name

        # a release that fails readiness on host2: host1 has it, host2 rolled itself
        # back, host3 was never touched; the play failed naming host2
        v3 = build_release(fleet.releases, "v3", _BAD_ON_HOST2)
        with fleet_under_load(nginx.port, figures, "deploy v3 (fails on host2)"):
            cp = fleet.play("deploy.yml", "-e", f"app={APP} release=v3 src={v3}")
        assert cp.returncode != 0, out(cp)
        assert re.search(r"host2: `supctl deploy web v3` exited 1", cp.stdout), out(cp)
        assert BAD_REASON in cp.stdout, out(cp)
        rc = recap(cp)
        assert rc["host1"]["failed"] == 0 and rc["host2"]["failed"] == 1, rc
        assert "host3" not in rc, rc  # its batch never ran
        h1, h2, h3 = fleet.hosts
        assert h1.releases() == {"current": "v3", "primary": "v3", "backup": "v3"}
        assert h2.releases() == {"current": "v2", "primary": "v2", "backup": "v2"}
        assert h3.releases() == {"current": "v2", "primary": "v2", "backup": "v2"}
        assert not (h3.root / "releases" / "v3").exists()  # not even uploaded

        # fleet rollback: every host to the release before its current one
        with fleet_under_load(nginx.port, figures, "fleet rollback"):
            cp = fleet.play("rollback.yml", "-e", f"app={APP}")
        assert cp.returncode == 0, out(cp)
        assert h1.releases()["current"] == "v2"
        assert h2.releases()["current"] == "v1"
        assert h3.releases()["current"] == "v1"

        # the status play: one line per host and instance
        cp = fleet.play("status.yml")
        assert cp.returncode == 0, out(cp)
        for h, release in ((h1, "v2"), (h2, "v1"), (h3, "v1")):
            for inst in ("primary", "backup"):
                line = f"{h.name} {APP}:{inst} RUNNING release={release} pid="
                assert line in cp.stdout, out(cp)
    finally:
        if nginx is not None:
            nginx.stop()
        leftovers = fleet.close()
        print("\n".join(f"{k}: {v}" for k, v in figures.items()))
    assert not leftovers, f"processes left behind: {leftovers}"


# --------------------------------------------------------------------------- systemd


@needs_ansible
@pytest.mark.fleet
@pytest.mark.timeout(900)
def test_install_play_under_real_systemd(systemd_box: None, wheelhouse: Path) -> None:
    """install.yml with the systemd unit, inside a booted systemd (systemd-box): the
    unit enabled and active (Type=notify: started once the app is ready), a second run
    changes nothing, a changed config is applied by `supctl update` (same daemon)."""
    # under the repo: the box binds it (it cleans its own /tmp at boot)
    work = REPO / "build" / "fleet-box"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    http_port, app_port = free_port(), free_port()

    def inventory(greeting: str) -> None:
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": PYTHON,
            "ansible_become": False,
            "supervisord_lite_pip_extra_args": f"--no-index --find-links {wheelhouse}",
            "supervisord_lite_http_listen": f"127.0.0.1:{http_port}",
            "supervisord_lite_apps": {
                "hello": {
                    "command": ["/usr/bin/python3", "-m", "http.server", str(app_port)],
                    "env": {"GREETING": greeting},
                    "ready": {"tcp": f"127.0.0.1:{app_port}", "timeout": 20},
                }
            },
        }
        inv = {"supervisord_lite": {"hosts": {"box1": host}}}
        (work / "inventory.yml").write_text(json.dumps(inv, indent=2) + "\n")

    def play() -> subprocess.CompletedProcess[str]:
        return box(
            "exec",
            "env",
            f"ANSIBLE_CONFIG={ANSIBLE_DIR / 'ansible.cfg'}",
            "ANSIBLE_NOCOLOR=1",
            "sh",
            "-c",
            f"cd {ANSIBLE_DIR} && {ANSIBLE_PLAYBOOK} -i {work / 'inventory.yml'} install.yml",
        )

    def daemon_pid() -> str:
        return box(
            "exec", "systemctl", "show", "-p", "MainPID", "--value", "supervisord-lite"
        ).stdout

    def reset() -> None:
        # the box's root file system is cached between boots: start from a clean host
        box(
            "exec",
            "sh",
            "-c",
            "systemctl disable --now supervisord-lite; rm -rf /opt/supervisord-lite "
            "/etc/supervisord-lite /var/lib/supervisord-lite "
            "/etc/systemd/system/supervisord-lite.service*; systemctl daemon-reload",
        )

    try:
        reset()
        assert box("exec", "test", "-e", "/opt/supervisord-lite").returncode != 0
        inventory("hello")
        cp = play()
        assert cp.returncode == 0, out(cp)
        assert (
            box("exec", "systemctl", "is-enabled", "supervisord-lite").stdout.strip() == "enabled"
        )
        assert box("exec", "systemctl", "is-active", "supervisord-lite").stdout.strip() == "active"
        status = box(
            "exec",
            "/opt/supervisord-lite/bin/supctl",
            "-s",
            "/var/lib/supervisord-lite/supctl.sock",
            "--json",
            "status",
        )
        assert status.returncode == 0, status.stdout + status.stderr
        app = json.loads(status.stdout.splitlines()[-1])["result"]["apps"]["hello"]
        assert app["instances"]["primary"]["state"] == "RUNNING", app
        pid = daemon_pid()

        cp = play()
        assert cp.returncode == 0, out(cp)
        assert recap(cp)["box1"]["changed"] == 0, out(cp)

        inventory("hi")  # a config change: template + `supctl update`, same daemon
        cp = play()
        assert cp.returncode == 0, out(cp)
        assert recap(cp)["box1"]["changed"] == 2, out(cp)
        assert daemon_pid() == pid
    finally:
        reset()
        shutil.rmtree(work, ignore_errors=True)
