"""The release pipeline end to end: artifacts, deploy tasks, notify hooks, retention.

Artifacts are served by a real aiohttp server in the test process (a thread with
its own loop) and fetched by a real daemon; archives are built with tarfile and
zipfile. The app is tests/apps/testapp.py as primary and backup. Hooks are real
commands that append the JSON they get to a file. Retention is checked on the
release store itself (no daemon needed for that arithmetic).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import DaemonFactory
from helpers import PYTHON, REPO, TESTAPP, RunningDaemon, free_port, wait_until
from helpers.load import WRK, Wrk

from supervisord_lite.app.releases import ReleaseStore
from supervisord_lite.config.settings import ReleaseConfig

APP = "web"


# --------------------------------------------------------------------------- artifacts


def tar_gz(files: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def good_files() -> dict[str, bytes]:
    app = TESTAPP.read_bytes()
    return {"app.py": app, "testapp.py": app}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactServer:
    """An aiohttp server on loopback: ``/f/NAME`` serves ``files[NAME]``; ``/slow/NAME``
    sends half of it, then waits until :attr:`release` is set (a download in flight);
    ``POST /hook`` keeps each JSON body in :attr:`posted` (a webhook's receiver)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.posted: list[dict[str, Any]] = []
        self.port = free_port()
        self.half_sent = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def url(self, name: str, slow: bool = False) -> str:
        return f"http://127.0.0.1:{self.port}/{'slow' if slow else 'f'}/{name}"

    async def _file(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data)

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        data = self.files[request.match_info["name"]]
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        self.half_sent.set()
        assert self.release is not None
        await self.release.wait()
        return response

    async def _hook(self, request: web.Request) -> web.Response:
        self.posted.append(await request.json())
        return web.Response(status=204)

    async def _start(self) -> None:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/f/{name}", self._file)
        app.router.add_get("/slow/{name}", self._slow)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        assert self.release is not None and self._runner is not None
        self.release.set()
        await self._runner.cleanup()

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as s:
        yield s


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    first = root / "releases" / "v1"
    first.mkdir(parents=True)
    shutil.copy(TESTAPP, first / "app.py")
    os.symlink("releases/v1", root / "current")
    return root


def web_app(root: Path, **extra: Any) -> dict[str, Any]:
    app: dict[str, Any] = {
        "command": [PYTHON, "{release_dir}/app.py"],
        "instances": ["primary", "backup"],
        "listen": {"primary": f"127.0.0.1:{free_port()}", "backup": f"127.0.0.1:{free_port()}"},
        "ready": {"http": "http://{host}:{port}/", "timeout": 15},
        "stop": {"timeout": 5},
        "release": {"root": str(root), "keep": 2, "settle": 0, "max_artifact": "64KiB"},
    }
    app.update(extra)
    return app


def running(d: RunningDaemon, app: str = APP) -> RunningDaemon:
    """``d`` once every instance of ``app`` is RUNNING."""

    def up() -> bool:
        instances = d.status()["apps"][app]["instances"].values()
        return all(i["state"] == "RUNNING" for i in instances)

    wait_until(up, 20, f"{app} to run")
    return d


def release_names(root: Path) -> list[str]:
    return sorted(os.listdir(root / "releases"))


def events_of(d: RunningDaemon, app: str, kind: str) -> list[dict[str, Any]]:
    """The history events of ``kind`` about ``app``, newest first."""
    cp = d.supctl("history", app, "-n", "500", json_output=True)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    final = json.loads(cp.stdout.splitlines()[-1])
    return [e for e in final["result"]["events"] if e["kind"] == kind]


def events(d: RunningDaemon, kind: str) -> list[dict[str, Any]]:
    return events_of(d, APP, kind)


def supctl_in_background(d: RunningDaemon, *args: str) -> subprocess.Popen[str]:
    argv = [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO)
    )


# --------------------------------------------------------------------------- tests


def test_an_artifact_is_fetched_verified_unpacked_and_deployed(
    make_daemon: DaemonFactory, tmp_path: Path, server: ArtifactServer
) -> None:
    root = make_root(tmp_path)
    data = tar_gz(good_files())
    server.files["web-v2.tar.gz"] = data
    d = running(make_daemon({APP: web_app(root)}))
    cp = d.supctl(
        "deploy", APP, "v2", "--artifact", server.url("web-v2.tar.gz"), "--sha256", sha(data)
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "downloading" in cp.stdout + cp.stderr
    assert release_names(root) == ["v1", "v2"]
    assert os.readlink(root / "current") == "releases/v2"
    fetched = events(d, "artifact")[0]
    assert fetched["url"] == server.url("web-v2.tar.gz")
    assert (fetched["sha256"], fetched["size"]) == (sha(data), len(data))
    # the same name with the same contents again: fine, nothing fetched twice
    cp = d.supctl(
        "deploy", APP, "v2", "--artifact", server.url("web-v2.tar.gz"), "--sha256", sha(data)
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # the same name with other contents: refused
    other = tar_gz({**good_files(), "extra.txt": b"x"})
    server.files["other.tar.gz"] = other
    cp = d.supctl(
        "deploy", APP, "v2", "--artifact", server.url("other.tar.gz"), "--sha256", sha(other)
    )
    assert cp.returncode == 1 and "other contents" in cp.stderr, cp.stderr
    assert sorted(os.listdir(root / "releases" / "v2")) == ["app.py", "testapp.py"]


def _link_out() -> tarfile.TarInfo:
    info = tarfile.TarInfo("escape")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


def _device() -> tarfile.TarInfo:
    info = tarfile.TarInfo("null")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def _zip_traversal() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("app.py", TESTAPP.read_bytes())
        archive.writestr("../../outside.txt", b"pwned")
    return buf.getvalue()


BAD: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "traversal": ("a.tar.gz", lambda: tar_gz({"../outside.txt": b"pwned"}), "outside"),
    "absolute": ("a.tar.gz", lambda: tar_gz({"/tmp/sl-abs.txt": b"pwned"}), "absolute"),
    "link-out": ("a.tar.gz", lambda: tar_gz(good_files(), extra=[_link_out()]), "link"),
    "device": ("a.tar.gz", lambda: tar_gz(good_files(), extra=[_device()]), "special"),
    "zip-traversal": ("a.zip", _zip_traversal, "outside the release"),
    "oversized": ("a.tar", lambda: os.urandom(70_000), "over the limit"),
}


def test_unpacked_modes_are_the_archives_less_the_apps_umask(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """As tar does for a non-root user: a 0777 file and directory with umask 027 are
    0750; a private directory stays private; the data filter's go-w strip still holds."""
    root = make_root(tmp_path)

    def entry(name: str, mode: int, data: bytes | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = mode
        if data is None:
            info.type = tarfile.DIRTYPE
        else:
            info.size = len(data)
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(entry("app.py", 0o644, TESTAPP.read_bytes()), io.BytesIO(TESTAPP.read_bytes()))
        tar.addfile(entry("bin", 0o777))
        tar.addfile(entry("bin/run.sh", 0o777, b"#!/bin/sh\n"), io.BytesIO(b"#!/bin/sh\n"))
        tar.addfile(entry("keys", 0o700))
        tar.addfile(entry("keys/k", 0o666, b"k"), io.BytesIO(b"k"))
    artifact = tmp_path / "web-v2.tar.gz"
    artifact.write_bytes(buf.getvalue())
    d = running(make_daemon({APP: web_app(root, umask="027")}))
    cp = d.supctl("deploy", APP, "v2", "--artifact", str(artifact), "--sha256", sha(buf.getvalue()))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    v2 = root / "releases" / "v2"
    modes = {p.relative_to(v2).as_posix(): p.stat().st_mode & 0o7777 for p in v2.rglob("*")}
    assert modes == {
        "app.py": 0o640,
        "bin": 0o750,
        "bin/run.sh": 0o750,
        "keys": 0o700,
        "keys/k": 0o640,
    }


@pytest.mark.parametrize("case", [*BAD, "bad-checksum"])
def test_bad_artifacts_are_refused_with_nothing_left(
    make_daemon: DaemonFactory, tmp_path: Path, server: ArtifactServer, case: str
) -> None:
    root = make_root(tmp_path)
    if case == "bad-checksum":
        name, data, why = "a.tar.gz", tar_gz(good_files()), "sha256 mismatch"
        digest = sha(data + b"tampered")
    else:
        name, build, why = BAD[case]
        data = build()
        digest = sha(data)
    server.files[name] = data
    d = running(make_daemon({APP: web_app(root)}))
    before = d.status()["apps"][APP]
    cp = d.supctl("deploy", APP, "v2", "--artifact", server.url(name), "--sha256", digest)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert why in cp.stderr, cp.stderr
    assert release_names(root) == ["v1"]  # no v2, no .incoming-*
    assert os.readlink(root / "current") == "releases/v1"
    assert not (tmp_path / "outside.txt").exists() and not Path("/tmp/sl-abs.txt").exists()
    after = d.status()["apps"][APP]
    pids = {n: i["pid"] for n, i in before["instances"].items()}
    assert {n: i["pid"] for n, i in after["instances"].items()} == pids
    refused = events(d, "artifact")[0]
    assert refused["result"] == "failed" and why in refused["reason"]


@pytest.mark.parametrize("phase", ["download", "unpack"])
def test_a_daemon_killed_mid_install_leaves_no_partial_release(
    make_daemon: DaemonFactory, tmp_path: Path, server: ArtifactServer, phase: str
) -> None:
    root = make_root(tmp_path)
    rng = random.Random(f"kill-{phase}")
    files = good_files()
    if phase == "unpack":  # many files: the unpacking takes a while, and is killed in it
        files.update({f"data/{i}.txt": os.urandom(200) for i in range(3000)})
    data = tar_gz(files)
    server.files["big.tar.gz"] = data
    app = web_app(root)
    app["release"]["max_artifact"] = "16MiB"
    d = running(make_daemon({APP: app}))
    d.expected_exit = None  # the first daemon is killed
    url = server.url("big.tar.gz", slow=phase == "download")
    proc = supctl_in_background(d, "deploy", APP, "v2", "--artifact", url, "--sha256", sha(data))
    try:
        if phase == "download":
            assert server.half_sent.wait(15)
        else:
            wait_until(
                lambda: any(n.startswith(".incoming-") for n in release_names(root)),
                15,
                "the unpacking to begin",
                interval=0.002,
            )
        time.sleep(rng.uniform(0, 0.05))  # a seeded instant inside that phase
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
    finally:
        proc.communicate(timeout=30)
    assert "v2" not in release_names(root)
    d.start()  # the next daemon adopts the apps and sweeps the leftovers
    wait_until(lambda: release_names(root) == ["v1"], 10, "the .incoming-* leftovers swept")
    assert os.readlink(root / "current") == "releases/v1"
    cp = d.supctl(
        "deploy", APP, "v2", "--artifact", server.url("big.tar.gz"), "--sha256", sha(data)
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


@pytest.mark.skipif(WRK is None, reason="needs wrk")
def test_a_failing_before_task_refuses_the_deploy_under_load(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    root = make_root(tmp_path)
    v2 = root / "releases" / "v2"
    v2.mkdir()
    shutil.copy(TESTAPP, v2 / "app.py")
    (v2 / "migrate.sh").write_text(
        "echo migrating in $(pwd)\necho 'migration 42 failed' >&2\nexit 7\n"
    )
    port = free_port()
    app = web_app(root, deploy={"before": [["/bin/sh", "migrate.sh"]], "timeout": 10})
    app["listen"] = f"127.0.0.1:{port}"  # one shared socket: the load sees both
    d = running(make_daemon({APP: app}))
    pids = {n: i["pid"] for n, i in d.status()["apps"][APP]["instances"].items()}
    with Wrk(port) as wrk:
        cp = d.supctl("deploy", APP, "v2")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "migration 42 failed" in cp.stdout + cp.stderr
    assert "exit status 7" in cp.stderr
    assert {n: i["pid"] for n, i in d.status()["apps"][APP]["instances"].items()} == pids
    assert wrk.result is not None
    assert wrk.result.failed == 0, wrk.result.summary
    task = events(d, "task")[0]
    assert task["exit_status"] == 7 and task["phase"] == "before"
    assert f"migrating in {v2}" in task["output"]


def add_release(root: Path, name: str, reindex: str | None) -> Path:
    """``releases/NAME`` running the test app, with ``reindex.sh`` (an after task) if given."""
    release = root / "releases" / name
    release.mkdir(exist_ok=True)
    shutil.copy(TESTAPP, release / "app.py")
    if reindex is not None:
        (release / "reindex.sh").write_text(reindex)
    return release


REINDEX_OK = "echo reindexed in $(pwd)\n"
REINDEX_BROKEN = "echo 'reindex: the search index is corrupt' >&2\nexit 5\n"


def releases_run(d: RunningDaemon) -> tuple[str | None, dict[str, str | None]]:
    """The app's current release and each instance's, from /status."""
    app = d.status()["apps"][APP]
    return app["release"], {n: i["release"] for n, i in app["instances"].items()}


@pytest.mark.parametrize("how", ["undo", "undo-promoted", "stand"])
def test_a_failing_after_task_rolls_back_only_when_asked(
    make_daemon: DaemonFactory, tmp_path: Path, how: str
) -> None:
    """``deploy.undo_failed_after``: true puts every instance back on the release before
    (exit 1, says so, history has it), also when the after task ran on ``promote``;
    false keeps the new one and reports the failure."""
    undo, promoted = how != "stand", how == "undo-promoted"
    root = make_root(tmp_path)
    add_release(root, "v1", REINDEX_OK)
    add_release(root, "v2", REINDEX_BROKEN)
    deploy = {"after": [["/bin/sh", "reindex.sh"]], "timeout": 10, "undo_failed_after": undo}
    d = running(make_daemon({APP: web_app(root, deploy=deploy)}))
    if promoted:
        paused = d.supctl("deploy", APP, "v2", "--pause")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert not events(d, "task")  # the after tasks wait for the promote
        cp = d.supctl("promote", APP)
    else:
        cp = d.supctl("deploy", APP, "v2")
    failed_task = next(e for e in events(d, "task") if e["release"] == "v2")
    assert (failed_task["phase"], failed_task["release"]) == ("after", "v2"), failed_task
    assert failed_task["exit_status"] == 5 and failed_task["result"] == "failed"
    assert "reindex: the search index is corrupt" in failed_task["output"]
    recorded = events(d, "promote" if promoted else "deploy")[0]
    if not undo:
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "deployed v2, but the after task /bin/sh reindex.sh failed (exit status 5)" in (
            cp.stdout + cp.stderr
        )
        assert releases_run(d) == ("v2", {"primary": "v2", "backup": "v2"})
        assert os.readlink(root / "current") == "releases/v2"
        assert recorded["result"] == "ok" and recorded["release"] == "v2"
        assert recorded["after_failed"]["exit_status"] == 5, recorded
        assert "but an after task failed (exit status 5)" in recorded["message"]
        printed = d.supctl_ok("history", APP).stdout.splitlines()
        task_line = next(line for line in printed if "  task  " in line)
        assert re.search(
            r"  task +web  after task /bin/sh reindex\.sh for v2: exit status 5 after \S+s  "
            r"result=failed phase=after duration_s=[\d.]+ uid=0 exit_status=5 release=v2 "
            r'output="reindex: the search index is corrupt"$',
            task_line,
        ), task_line
        return
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert (
        "web: after task /bin/sh reindex.sh failed (exit status 5); rolled back to v1" in cp.stderr
    ), cp.stderr
    assert "reindex: the search index is corrupt" in cp.stdout + cp.stderr
    assert releases_run(d) == ("v1", {"primary": "v1", "backup": "v1"})
    assert os.readlink(root / "current") == "releases/v1"
    assert recorded["result"] == "failed" and "rolled back to v1" in recorded["reason"]
    rolled = events(d, "rollback")[0]
    assert (rolled["result"], rolled["release"], rolled["previous"]) == ("ok", "v1", "v2")
    assert rolled["trigger"] == "deploy.undo_failed_after", rolled
    assert rolled["uid"] == os.geteuid(), rolled  # the caller of the deploy it undid
    if promoted:
        return
    # v2 failed: it is no rollback target. The release rolled back to has a broken after
    # task of its own: reported, and the rollback stands (no undoing the undo)
    add_release(root, "v3", REINDEX_BROKEN)
    (root / "releases" / "v1" / "reindex.sh").write_text(REINDEX_BROKEN)
    cp = d.supctl("deploy", APP, "v3")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "rolled back to v1, whose after task" in cp.stderr, cp.stderr
    assert releases_run(d) == ("v1", {"primary": "v1", "backup": "v1"})
    assert os.readlink(root / "current") == "releases/v1"


def hook_script(tmp_path: Path) -> list[str]:
    """A hook command appending each message it gets (one JSON line) to messages.jsonl."""
    out = tmp_path / "messages.jsonl"
    code = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    return [PYTHON, "-c", code]


def messages(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "messages.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_step_an_operator_starts_records_the_callers_uid(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """deploy, its artifact and tasks, promote and rollback: each history event names the
    caller's uid (and so does the rolled_back message), as deploy's own events do."""
    root = make_root(tmp_path)
    add_release(root, "v1", REINDEX_OK)
    data = tar_gz({**good_files(), "reindex.sh": REINDEX_OK.encode()})
    artifact = tmp_path / "web-v2.tar.gz"
    artifact.write_bytes(data)
    app = web_app(
        root,
        deploy={"after": [["/bin/sh", "reindex.sh"]], "timeout": 10},
        notify={"exec": hook_script(tmp_path), "events": ["rolled_back"]},
    )
    d = running(make_daemon({APP: app}))
    for argv in (
        ("deploy", APP, "v2", "--pause", "--artifact", str(artifact), "--sha256", sha(data)),
        ("promote", APP),
        ("rollback", APP),
    ):
        cp = d.supctl(*argv)
        assert cp.returncode == 0, (argv, cp.stdout + cp.stderr)
    me = os.geteuid()
    for kind in ("deploy_started", "deploy", "artifact", "task", "promote", "rollback"):
        found = events(d, kind)
        assert found and all(e.get("uid") == me for e in found), (kind, found)
    wait_until(lambda: messages(tmp_path), 10, "the rolled_back message")
    assert [(m["event"], m["uid"]) for m in messages(tmp_path)] == [("rolled_back", me)]
    # supctl history shows the pipeline's kinds as it shows the others: duration, uid...
    hook = d.wait_for(lambda: events(d, "hook"), 10, "the hook's record")[0]
    printed = d.supctl_ok("history", APP).stdout
    lines: dict[str, str] = {}  # the newest line of each kind
    for m in re.finditer(r"^\S+ \S+  (artifact|task|hook) .*", printed, re.MULTILINE):
        lines.setdefault(m.group(1), m.group(0))
    assert re.search(
        rf"web  v2 installed from {re.escape(str(artifact))} \({len(data)} bytes, "
        rf"sha256 {sha(data)[:12]}\.\.\., \S+s\)  result=ok duration_s=[\d.]+ uid={me} "
        r"release=v2$",
        lines["artifact"],
    ), lines["artifact"]
    assert re.search(
        r"after task /bin/sh reindex\.sh for v1: exit status 0 after \S+s  result=ok "
        rf"phase=after duration_s=[\d.]+ uid={me} exit_status=0 release=v1$",
        lines["task"],
    ), lines["task"]
    assert lines["hook"].endswith(
        f"web  {hook['message']}  result=ok duration_s={hook['seconds']}"
    ), lines["hook"]


def test_a_hook_gets_the_crashing_apps_last_output(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    code = (
        "import sys, time; print('boom: the disk is full (pid-x)', flush=True); "
        "time.sleep(0.3); sys.exit(3)"
    )
    d = make_daemon(
        {
            "crasher": {
                "command": [PYTHON, "-c", code],
                "ready": {"delay": 0.1},
                "backoff": {"initial": 5, "max": 5},
                "notify": {"exec": hook_script(tmp_path), "events": ["crash"]},
            }
        }
    )
    d.supctl("status")
    wait_until(lambda: messages(tmp_path), 5 + 2, "the hook to get the crash")
    message = messages(tmp_path)[0]
    assert message["event"] == "crash" and message["app"] == "crasher"
    assert any("the disk is full" in line for line in message["output"]), message
    assert events_of(d, "crasher", "hook")[0]["result"] == "ok"


def test_a_webhook_gets_the_crash_and_a_failing_one_is_recorded_once(
    make_daemon: DaemonFactory, server: ArtifactServer
) -> None:
    """``notify: {webhook: URL}``: the crash is POSTed as JSON with the app's last
    output; a webhook that answers 404 is recorded as failed, not retried."""
    code = "import sys; print('webhook-test: out of cheese', flush=True); sys.exit(3)"
    crasher = {
        "command": [PYTHON, "-c", code],
        "ready": {"delay": 0.1},
        "backoff": {"initial": 5, "max": 5},
        "restart": "never",
    }
    url = f"http://127.0.0.1:{server.port}"
    good = {**crasher, "notify": {"webhook": f"{url}/hook", "events": ["crash"]}}
    bad = {**crasher, "notify": {"webhook": f"{url}/nowhere", "events": ["crash"]}}
    d = make_daemon({"good": good, "bad": bad})
    wait_until(lambda: any(m.get("app") == "good" for m in server.posted), 7, "the POST")
    message = next(m for m in server.posted if m.get("app") == "good")
    assert message["event"] == "crash", message
    assert any("out of cheese" in line for line in message["output"]), message
    failed = d.wait_for(lambda: events_of(d, "bad", "hook"), 7, "the failed hook's record")
    assert failed[0]["result"] == "failed", failed
    assert not any(m.get("app") == "bad" for m in server.posted)
    d.supctl("status")  # (a turn of the daemon's loop later: still the one record)
    assert len(events_of(d, "bad", "hook")) == 1  # tried once, never again


def test_a_crash_loop_gives_a_bounded_number_of_messages(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    burst, window, crashes = 3, 4.0, 50
    d = make_daemon(
        {
            "loop": {
                "command": [PYTHON, "-c", "import sys; sys.exit(1)"],
                "ready": {"delay": 0.05},
                "backoff": {"initial": 0, "max": 0, "max_retries": crashes - 1},
                "notify": {
                    "exec": hook_script(tmp_path),
                    "events": ["crash", "fatal"],
                    "burst": burst,
                    "window": window,
                },
            }
        }
    )
    started = time.monotonic()
    wait_until(
        lambda: d.status()["apps"]["loop"]["instances"]["primary"]["state"] == "FATAL",
        60,
        "the crash loop to end in FATAL",
    )
    assert len(events_of(d, "loop", "crash")) >= 10

    def accounted() -> int:
        return sum(1 + m["folded"] for m in messages(tmp_path) if m["event"] == "crash")

    # every crash is either a message or counted in one (nothing lost), in bounded messages
    wait_until(lambda: accounted() >= len(events_of(d, "loop", "crash")), window + 10, "the fold")
    elapsed = time.monotonic() - started
    sent = [m for m in messages(tmp_path) if m["event"] == "crash"]
    assert len(sent) <= burst * (int(elapsed / window) + 2), (len(sent), elapsed)
    assert any(m["folded"] > 0 for m in sent)


# --------------------------------------------------------------------------- retention


def test_retention_keeps_the_rollback_target_and_drops_failed_releases_first(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    store = ReleaseStore(ReleaseConfig(root=str(root), keep=1), APP, str(tmp_path / "state"))
    (root / "releases").mkdir(parents=True)

    def add(name: str) -> None:
        (root / "releases" / name).mkdir()
        (root / "releases" / name / "app.py").write_text("")

    def deploy(name: str, ok: bool) -> None:
        add(name)
        if ok:
            history = store.record(name)
            store.switch_current(name)
            store.prune(history, {name})
        else:
            store.mark_failed(name)

    deploy("v1", True)
    deploy("v2", True)
    deploy("bad1", False)
    deploy("bad2", False)
    deploy("v3", True)  # keep 1: v2 (the rollback target) stays; both failed ones go
    assert release_names(root) == ["v2", "v3"]
    assert store.load().previous() == "v2"
    deploy("bad3", False)
    deploy("v4", True)
    assert release_names(root) == ["v3", "v4"]
    # a release that failed after v4 is never the rollback target
    history = store.load()
    assert history.previous() == "v3"
    store.mark_failed("v3")
    assert store.load().previous() == "v2" or store.load().previous() is None
    deploy("v5", True)
    assert "v4" in release_names(root)  # the rollback target of v5, whatever keep says


# --------------------------------------------------------------------------- as the app's user

USER = "sltest"  # the unprivileged user of tests/test_trust.py
APP_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.fixture(scope="module")
def app_user() -> pwd.struct_passwd:
    if os.geteuid() != 0 or APP_PYTHON is None:
        pytest.skip("needs root and /usr/bin/python3 to run an app as another user")
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(USER)
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("needs useradd to create the test user")
    argv = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return pwd.getpwnam(USER)


def test_an_artifact_is_read_and_unpacked_with_the_apps_rights(
    make_daemon: DaemonFactory, app_user: pwd.struct_passwd
) -> None:
    base = Path(tempfile.mkdtemp(prefix="sl-pipeline-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = make_root(base)
        for path in [root, *root.rglob("*")]:
            os.lchown(path, app_user.pw_uid, app_user.pw_gid)
        data = tar_gz(good_files())
        artifact = base / "web-v2.tar.gz"
        artifact.write_bytes(data)
        secret = base / "secret.tar.gz"  # root's only: the app's user may not read it
        secret.write_bytes(data)
        secret.chmod(0o600)
        app = web_app(root, user=USER, umask="027")
        app["command"] = [APP_PYTHON, "{release_dir}/app.py"]
        d = running(make_daemon({APP: app}))
        cp = d.supctl("deploy", APP, "v3", "--artifact", str(secret), "--sha256", sha(data))
        assert cp.returncode == 1 and "Permission denied" in cp.stderr, cp.stderr
        assert release_names(root) == ["v1"]
        url = f"file://{artifact}"
        cp = d.supctl("deploy", APP, "v2", "--artifact", url, "--sha256", sha(data))
        assert cp.returncode == 0, cp.stdout + cp.stderr
        made = [root / "releases" / "v2", *(root / "releases" / "v2").rglob("*")]
        # the app's own files; tar's modes kept, less any setuid or group/other write bit
        assert {(p.stat().st_uid, p.stat().st_mode & 0o6022) for p in made} == {
            (app_user.pw_uid, 0)
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
