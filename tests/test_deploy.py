"""End to end: canary deploys, promote, rollback, pruning, on a real daemon.

Releases are built under ``tmp_path/root/releases/NAME`` as they would be by a
deploy tool: ``app.py`` is a copy of tests/apps/testapp.py (the good releases),
exits 2 at boot after saying why (``crash``), answers 503 on /health whatever its
environment says (``sick``), or boots in about 1 s (``slow``). The app runs
``python {release_dir}/app.py`` as primary and backup, one socket each, with HTTP
ready (``/``) and health (``/health``) checks and ``release: {keep: 2, settle: 1}``.

The zero-downtime test puts a real nginx in front (primary, and the backup marked
``backup``), as in etc/nginx-upstream.conf, and keeps a steady load on it while it
deploys, fails to deploy and rolls back: no request may fail.

The harness here (:func:`make_release`, :class:`Load`; and helpers' :class:`Nginx`) is also used
by tests/bench/bench_deploy.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import (
    PYTHON,
    TESTAPP,
    Nginx,
    RunningDaemon,
    free_port,
    http_get,
    nginx_binary,
    wait_until,
)

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
    make_daemon: DaemonFactory,
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


# --------------------------------------------------------------------------- nginx


@pytest.fixture
def nginx_bin() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (tests/run.sh installs nginx-light)")
    return binary


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, for messages
    releases: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, of every request
    seconds: float = 0.0

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{self.ok} ok, {self.failed} failed in {self.seconds:.2f}s; releases "
            f"{dict(self.releases)}; latency p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
            + (f"; failures: {self.failures}" if self.failures else "")
        )


class Load:
    """Steady load: ``threads`` clients, each sending GET / (a new connection each) one
    after another with a short pause; bounded in time and in count."""

    def __init__(
        self,
        port: int,
        *,
        threads: int = 3,
        pause: float = 0.005,
        max_seconds: float = 60.0,
        max_requests: int = 20000,
        timeout: float = 30.0,
    ) -> None:
        self.port = port
        self.threads = threads
        self.pause = pause
        self.max_seconds = max_seconds
        self.per_thread = max(1, max_requests // threads)
        self.timeout = timeout
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._started = 0.0

    def _one(self) -> tuple[bool, str, float]:
        began = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return False, f"HTTP {resp.status}: {body[:200]!r}", time.monotonic() - began
            release = json.loads(body).get("release") or "?"
            return True, str(release), time.monotonic() - began
        except Exception as exc:  # any failure is a failed request, never a crash
            return False, repr(exc), time.monotonic() - began
        finally:
            conn.close()

    def _run(self) -> None:
        deadline = self._started + self.max_seconds
        for _ in range(self.per_thread):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            ok, what, took = self._one()
            with self._lock:
                r = self.result
                r.latencies.append(took)
                if ok:
                    r.ok += 1
                    r.releases[what] += 1
                else:
                    r.failed += 1
                    if len(r.failures) < 10:
                        r.failures.append(what)
            self._stop.wait(self.pause)

    def start(self) -> Load:
        self._started = time.monotonic()
        for n in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def count(self) -> int:
        with self._lock:
            return self.result.ok + self.result.failed

    def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` more requests have completed (the load is really on)."""
        target = self.count() + n
        wait_until(lambda: self.count() >= target, timeout, f"{n} requests through the load")

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(self.timeout + 5)
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def under_load(port: int, what: str, min_requests: int = 20) -> Iterator[Load]:
    """Run the block under steady load; then no request may have failed."""
    load = Load(port).start()
    try:
        load.wait_requests(min_requests)  # the load is on before the operation starts
        yield load
        load.wait_requests(min_requests)  # and stays on a little after it
    finally:
        result = load.stop()
    assert result.failed == 0, f"{what}: {result.summary()}"
    assert result.ok >= 2 * min_requests, f"{what}: too little load: {result.summary()}"


# --------------------------------------------------------------------------- tests


@pytest.mark.nginx
@pytest.mark.slow  # about 6 s alone, over 10 s on a busy host
def test_deploys_and_rollback_drop_no_request_through_nginx(
    make_daemon: DaemonFactory, tmp_path: Path, nginx_bin: str
) -> None:
    site = start_site(make_daemon, tmp_path)
    site.assert_on("v1", "v1", "v1", ["v1"])
    with Nginx(nginx_bin, tmp_path / "nginx", site.primary, site.backup) as nginx:
        pids = {name: site.daemon.pid(APP, name) for name in ("primary", "backup")}

        # 1. a good deploy: backup, settle, primary, then `current`
        make_release(site.root, "v2")
        with under_load(nginx.port, "deploy v1 -> v2") as load:
            cp = site.deploy("deploy", APP, "v2")
        assert_ok(cp)
        assert load.result.releases["v1"] > 0 and load.result.releases["v2"] > 0
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        new_pids = {name: site.daemon.pid(APP, name) for name in ("primary", "backup")}
        assert not set(new_pids.values()) & set(pids.values())  # both were replaced

        # 2. a release that crashes at boot: the backup's new generation exits 2
        make_release(site.root, "crash", "crash")
        with under_load(nginx.port, "deploy of a crashing release") as load:
            cp = site.deploy("deploy", APP, "crash")
        assert_failed(cp, "deploy of crash failed", "exited", "2", CRASH_REASON)
        assert set(load.result.releases) == {"v2"}
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        # the old generations kept serving: nothing was restarted
        assert {name: site.daemon.pid(APP, name) for name in ("primary", "backup")} == new_pids

        # 3. a sick release: ready, but /health says 503 while the canary settles
        make_release(site.root, "sick", "sick")
        with under_load(nginx.port, "deploy of a sick release") as load:
            cp = site.deploy("deploy", APP, "sick")
        assert_failed(cp, "deploy of sick failed", "health", "503", "testapp backup pid")
        assert set(load.result.releases) == {"v2"}
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        assert site.daemon.pid(APP, "primary") == new_pids["primary"]  # never touched

        # 4. rollback: back to v1, the release before current
        with under_load(nginx.port, "rollback") as load:
            cp = site.deploy("rollback", APP)
        assert_ok(cp)
        assert load.result.releases["v1"] > 0
        site.assert_on("v1", "v1", "v1", ["v1", "v2", "v1"], nginx)
        assert (site.root / "releases" / "v2").is_dir()  # the rollback target of next time


def test_paused_deploy_then_promote(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2")
    make_release(site.root, "v3")

    cp = site.deploy("deploy", APP, "v2", "--pause")
    assert_ok(cp)
    assert "promote" in cp.stdout + cp.stderr
    app = site.app_status()
    assert app["deploy"] is not None and app["deploy"]["release"] == "v2", app
    assert app["deploy"].get("phase") == "paused", app
    assert app["instances"]["backup"]["release"] == "v2"
    assert app["instances"]["primary"]["release"] == "v1"
    assert site.served(site.backup)["release"] == "v2"  # checkable on its own port
    assert site.served(site.primary)["release"] == "v1"
    assert app["instances"]["primary"]["pid"] == primary_pid
    assert app["release"] == "v1"
    assert site.current() == "releases/v1"  # nothing is current until promoted
    assert (site.history()["deployed"], site.history()["current"]) == (["v1"], "v1")
    # supctl status shows it too
    text = site.daemon.supctl("status").stdout
    assert "deploy" in text and "v2" in text, text

    # another deploy is refused while this one waits, and changes nothing
    cp = site.deploy("deploy", APP, "v3")
    assert_failed(cp, "paused")
    assert "promote" in cp.stderr + cp.stdout
    app = site.app_status()
    assert app["instances"]["backup"]["release"] == "v2"
    assert app["instances"]["primary"]["release"] == "v1"
    assert app["deploy"]["release"] == "v2"

    cp = site.deploy("promote", APP)
    assert_ok(cp)
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])
    assert site.daemon.pid(APP, "primary") != primary_pid

    # nothing left to promote: a usage error
    cp = site.deploy("promote", APP)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "no paused deploy" in cp.stderr


def test_rollback_of_a_paused_deploy(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2", "--pause"))
    assert site.served(site.backup)["release"] == "v2"

    cp = site.deploy("rollback", APP)
    assert_ok(cp)
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert site.daemon.pid(APP, "primary") == primary_pid  # the primary was never touched
    # the deploy is over: a new one may start (and completes)
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])


def test_failure_on_the_primary_returns_the_backup_to_the_old_release(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The canary passes but the primary's new generation fails: the backup is swapped
    back, the primary's old generation never stopped serving, nothing becomes current."""
    site = start_site(make_daemon, tmp_path, settle=0.2)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2", "primary-crash")
    cp = site.deploy("deploy", APP, "v2")
    assert_failed(cp, "deploy of v2 failed", "web:primary", PRIMARY_REASON)
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert site.daemon.pid(APP, "primary") == primary_pid
    # and a good deploy afterwards goes through
    make_release(site.root, "v3")
    assert_ok(site.deploy("deploy", APP, "v3"))
    site.assert_on("v3", "v3", "v3", ["v1", "v3"])


def test_deploy_keeps_releases_uploaded_ahead(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    for name in ("v2", "v3", "v4"):  # a CI pipeline uploads releases as they are built
        make_release(site.root, name)
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])
    assert sorted(os.listdir(site.root / "releases")) == ["v1", "v2", "v3", "v4"]
    assert_ok(site.deploy("deploy", APP, "v3"))


def test_missing_release_changes_nothing(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    before = site.app_status()

    # nothing to roll back to yet
    assert_failed(site.deploy("rollback", APP), "no previous release")

    cp = site.deploy("deploy", APP, "v9")
    assert_failed(cp, str(site.root / "releases" / "v9"))
    after = site.app_status()
    for name in ("primary", "backup"):
        assert after["instances"][name]["pid"] == before["instances"][name]["pid"]
        assert after["instances"][name]["generation"] == before["instances"][name]["generation"]
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert not (site.root / "releases" / "v9").exists()

    # a name that is a path is no release either
    assert_failed(site.deploy("deploy", APP, "../releases/v1"), "not found")
    site.assert_on("v1", "v1", "v1", ["v1"])


def test_crashed_backup_respawns_on_its_release(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    old = site.daemon.pid(APP, "backup")
    os.kill(old, signal.SIGKILL)
    site.daemon.wait_for(
        lambda: (
            (i := site.app_status()["instances"]["backup"])["state"] == "RUNNING"
            and i["pid"] not in (None, old)
        ),
        15,
        "the backup to be respawned",
    )
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    # a failed deploy leaves the instance's release alone: the next crash respawns v2
    make_release(site.root, "crash", "crash")
    assert_failed(site.deploy("deploy", APP, "crash"), CRASH_REASON)
    old = site.daemon.pid(APP, "backup")
    os.kill(old, signal.SIGKILL)
    site.daemon.wait_for(
        lambda: (
            (i := site.app_status()["instances"]["backup"])["state"] == "RUNNING"
            and i["pid"] not in (None, old)
        ),
        15,
        "the backup to be respawned",
    )
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])


def test_daemon_restart_keeps_the_history(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    assert site.daemon.terminate() == 0
    site.daemon.start()  # same config, same state_dir
    site.daemon.wait_running(APP, "primary", "backup", timeout=20)
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    cp = site.deploy("rollback", APP)
    assert_ok(cp)
    site.assert_on("v1", "v1", "v1", ["v1", "v2", "v1"])


def test_pruning_keeps_current_running_and_recent(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    releases = site.root / "releases"
    deployed = ["v1"]
    gone: set[str] = set()
    for n in range(2, 6):
        name = f"v{n}"
        make_release(site.root, name)
        cp = site.daemon.supctl("deploy", APP, name, json_output=True)
        assert_ok(cp)
        final = json.loads(cp.stdout.strip().splitlines()[-1])
        deployed.append(name)
        kept = set(deployed[-3:])  # current and the 2 before it
        assert set(os.listdir(releases)) == kept, (name, os.listdir(releases))
        assert set(final["result"]["pruned"]) == set(deployed) - kept - gone, final
        gone |= set(final["result"]["pruned"])
        app = site.app_status()
        for inst in app["instances"].values():
            assert inst["release"] == name and (releases / name).is_dir()
        site.assert_on(name, name, name, deployed)
    assert sorted(os.listdir(releases)) == ["v3", "v4", "v5"]

    # rollback goes to v4 (kept), and v3 is still kept as a recent one
    assert_ok(site.deploy("rollback", APP))
    site.assert_on("v4", "v4", "v4", [*deployed, "v4"])
    assert sorted(os.listdir(releases)) == ["v3", "v4", "v5"]


def test_metrics_name_each_instances_release(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    code, body = site.daemon.http("/metrics")
    assert code == 200
    text = body.decode()
    for inst in ("primary", "backup"):
        ids = f'app="{APP}",app_instance="{inst}",release="v2"'
        line = f"supervisord_lite_instance_info{{{ids}}} 1.0"
        assert line in text.splitlines(), text
    assert 'release="v1"' not in text


def test_a_deploy_refused_while_starting_leaves_no_release_behind(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A deploy refused because an instance is still starting changes nothing: that
    instance's next (automatic) start boots the release it had, not the refused one
    (a swap's parameters travel with its request; nothing is left pending)."""
    root = make_root(tmp_path)
    make_release(root, "v2")
    hold = tmp_path / "hold"
    primary, backup = free_port(), free_port()
    app = web_app(root, primary, backup)
    app["env"] = {"HOLD_FILE": str(hold)}
    d = make_daemon({APP: app}, start=False)
    hold.write_text("booting")
    d.start()
    try:
        d.wait_state(APP, "backup", "STARTING", timeout=10)
        cp = d.supctl("deploy", APP, "v2")
        assert cp.returncode == 1, cp.stdout + cp.stderr
    finally:
        hold.unlink()
    pids = d.wait_running(APP, "primary", "backup", timeout=20)
    os.kill(pids["backup"], signal.SIGKILL)  # the next start is an automatic one
    new = d.wait_for(
        lambda: (
            i
            if (i := d.instance(APP, "backup"))["state"] == "RUNNING"
            and i["pid"] not in (None, pids["backup"])
            else None
        ),
        20,
        "the backup restarted",
    )
    assert new["release"] == "v1", new
    assert json.loads(http_get("127.0.0.1", backup)[1])["release"] == "v1"
