"""End-to-end test helpers: a real supervisord-lite daemon with real children.

:class:`RunningDaemon` writes a config under a temporary directory (state_dir there,
the HTTP API on a free port, the control socket in the state_dir), starts
``python -m supervisord_lite.cli -c CONFIG`` with its output in a file, and waits
(polling a condition with a deadline, never a fixed sleep) until ``supctl status``
answers. Tests drive it through :meth:`RunningDaemon.supctl` and read it through
:meth:`RunningDaemon.status`.

On close it sends SIGTERM, waits for the daemon to exit, and then checks that no
process it spawned is still alive: every pid ever seen (in statuses, and in the
daemon's process tree whenever a test polls) and every process group of those.
A leftover is killed by pid and reported as a failure: a leaked child is a bug.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import inspect
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import psutil

REPO = Path(__file__).resolve().parents[2]
APPS_DIR = REPO / "tests" / "apps"
TESTAPP = APPS_DIR / "testapp.py"
PYTHON = sys.executable

T = TypeVar("T")

POLL = 0.03  # seconds between two looks at a condition
START_DEADLINE = 15.0  # the daemon's control socket must answer within this
STOP_DEADLINE = 20.0  # the daemon must exit within this after SIGTERM
SUPCTL_TIMEOUT = 60.0
STATUS_ANSWERED = (0, 5)  # supctl status: 5 = answered, but not everything runs (docs/contract.md)

_ports_handed_out: set[int] = set()


# --------------------------------------------------------------------------- other users

_staged_supctl: tuple[str, str] | None = None


def supctl_as(prefix: tuple[str, ...], *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run supctl under ``prefix`` (setpriv to another uid).

    That user may be unable to read this checkout (CI clones into a directory only
    root can enter) or the venv's interpreter, so supctl (stdlib only) runs from a
    world-readable copy of the package, under an interpreter that user can execute.
    """
    global _staged_supctl
    if _staged_supctl is None:
        staged = tempfile.mkdtemp(prefix="supervisord-lite-supctl-")
        os.chmod(staged, 0o755)
        shutil.copytree(
            REPO / "supervisord_lite",
            Path(staged) / "supervisord_lite",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for root, dirs, files in os.walk(staged):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        atexit.register(shutil.rmtree, staged, True)
        probe = "import sys; assert sys.version_info >= (3, 11)"
        candidates = [os.path.realpath(PYTHON), "/usr/bin/python3", "/usr/local/bin/python3"]
        for interpreter in candidates:
            ok = subprocess.run(
                [*prefix, interpreter, "-c", probe], capture_output=True, check=False, timeout=30
            )
            if ok.returncode == 0:
                _staged_supctl = (interpreter, staged)
                break
        else:
            raise RuntimeError(f"no Python >= 3.11 that {prefix} can run among {candidates}")
    interpreter, staged = _staged_supctl
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    env.update(PYTHONPATH=staged, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    return [*prefix, interpreter, "-m", "supervisord_lite.supctl", *args], env


# --------------------------------------------------------------------------- ports


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports handed out are leased host-wide (a file per port naming the test process), so
# two test runs at once on one machine never pick the same port between one's check
# and its daemon's bind; a lease whose process is gone is taken over.
_LEASES = Path(tempfile.gettempdir()) / "supervisord-lite-test-ports"


def _lease(port: int) -> bool:
    path = _LEASES / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except PermissionError:
            return True  # another user's lease directory: no leases for this run
        except FileExistsError:
            try:
                owner = int(path.read_text())
            except (OSError, ValueError):
                return False  # gone, or being written by its taker this instant
            if owner == os.getpid() or psutil.pid_exists(owner):
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its test run is over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 in 20000-30000 that binds now (never the ephemeral range),
    leased to this test run."""
    _LEASES.mkdir(exist_ok=True)
    for _ in range(1000):
        port = random.randint(20000, 30000)
        if port in _ports_handed_out:
            continue
        if _port_is_free(port) and _lease(port):
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free port found in 20000-30000")


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str = "condition",
    interval: float = POLL,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` every ``interval`` until it returns something truthy (returned);
    raise AssertionError naming ``what`` when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str = ...,
    interval: float = ...,
) -> T: ...


@overload
async def wait_until_async(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str = ...,
    interval: float = ...,
) -> T: ...


async def wait_until_async(
    predicate: Callable[[], Any],
    timeout: float,
    what: str = "condition",
    interval: float = POLL,
) -> Any:
    """:func:`wait_until` inside an event loop: the loop's tasks run between two looks;
    ``predicate`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- processes


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when gone)."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return proc_state(pid) not in (None, "Z", "X")


def kill_dead(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL ``pid`` and return once it is dead (gone or a zombie: its descriptors
    closed). kill() returns when the signal is sent, not when the process is gone: a
    client resumed at once could still be accepted by the dying process and reset."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: proc_state(pid) in (None, "Z", "X"), timeout, f"pid {pid} to die")


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process from /proc/PID/stat (None when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[0]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (zombies included), from /proc/PID/task/*/children."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (not ``pid`` itself)."""
    out: list[int] = []
    todo = children_of(pid)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(children_of(p))
    return out


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def app_cmd(**env: object) -> dict[str, Any]:
    """The command and env of an app entry running tests/apps/testapp.py with knobs."""
    return {"command": [PYTHON, str(TESTAPP)], "env": {k: str(v) for k, v in env.items()}}


def py_app(code: str, **env: object) -> dict[str, Any]:
    """An app entry running a small inline Python program."""
    return {"command": [PYTHON, "-c", code], "env": {k: str(v) for k, v in env.items()}}


def http_get(host: str, port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP GET with http.client: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the daemon


class RunningDaemon:
    """A real daemon on a config written from ``apps`` (a dict of app name -> settings)."""

    def __init__(
        self,
        root: Path,
        apps: dict[str, dict[str, Any]],
        *,
        supervisor: dict[str, Any] | None = None,
        http: bool = True,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state_dir = root / "state"
        self.sock = str(self.state_dir / "supctl.sock")
        self.config_path = root / "supervisord-lite.yaml"
        self.output_path = root / "daemon.out"
        self.http_port = free_port() if http else None
        sup: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "http": {"listen": f"127.0.0.1:{self.http_port}" if http else None},
            "log": {"format": "json", "level": "info"},
            "shutdown_timeout": 10,
        }
        sup.update(supervisor or {})
        self.config: dict[str, Any] = {"supervisor": sup, "apps": apps}
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._seen: dict[int, float | None] = {}  # pid -> create time, of every child seen
        self._closed = False
        self.expected_exit: int | None = 0  # what close() requires of the daemon's exit
        self.launcher: tuple[str, ...] = ()  # a command the daemon is started under

    # --- lifetime -------------------------------------------------------------------

    def write_config(self) -> None:
        # JSON is YAML: no quoting surprises (umask strings, "on-failure", ...)
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")

    def start(self, wait: bool = True) -> RunningDaemon:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "NOTIFY_SOCKET",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "SUPCTL_SOCKET",
            )
        }
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, PYTHON, "-m", "supervisord_lite.cli", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
                env=env,
            )
        if wait:
            self.wait_for(self._answers, START_DEADLINE, "the daemon's control socket to answer")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"the daemon exited with {self.proc.returncode} at start-up:\n" + self.output()
            )
        if not os.path.exists(self.sock):
            return False
        return self.supctl("status").returncode in STATUS_ANSWERED

    @property
    def pid_of_daemon(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def terminate(self, timeout: float = STOP_DEADLINE) -> int:
        """SIGTERM the daemon and wait (with a deadline) for it to exit; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.record_tree()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"the daemon did not exit within {timeout:g}s of SIGTERM:\n" + self.output()
                ) from None
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self) -> None:
        """Stop the daemon and fail if it did not exit with ``expected_exit`` (None: any)
        or left a process behind."""
        if self._closed or self.proc is None:
            return
        self._closed = True
        expect_exit = self.expected_exit
        problems: list[str] = []
        try:
            code = self.terminate()
            if expect_exit is not None and code != expect_exit:
                problems.append(f"the daemon exited with {code}, expected {expect_exit}")
        except AssertionError as exc:
            problems.append(str(exc))
        leaked = self.leftovers()
        for pid, _cmdline in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leaked:
            problems.append(
                "processes left behind by the daemon (killed now): "
                + "; ".join(f"pid {p} {c}" for p, c in leaked)
            )
        if problems:
            raise AssertionError(
                "\n".join(problems) + "\n--- daemon output (tail) ---\n" + self.output(80)
            )

    def __enter__(self) -> RunningDaemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- leak tracking ------------------------------------------------------------------

    def remember(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self._seen:
                self._seen[pid] = create_time(pid)

    def record_tree(self) -> list[int]:
        """Remember every live descendant of the daemon; return them."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found = descendants_of(self.proc.pid)
        self.remember(found)
        return found

    @property
    def seen_pids(self) -> set[int]:
        return set(self._seen)

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes among the pids seen, or in their process groups."""
        out: dict[int, str] = {}
        groups = set(self._seen)
        for pid, created in self._seen.items():
            if not pid_alive(pid):
                continue
            if created is not None and create_time(pid) != created:
                continue  # the pid was reused by an unrelated process
            out[pid] = _cmdline(pid)
        since = min((c for c in self._seen.values() if c is not None), default=None)
        for proc in psutil.process_iter(["pid", "create_time", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid in out:
                    continue
                if os.getpgid(proc.pid) not in groups:
                    continue
                if since is not None and proc.info["create_time"] < since - 1:
                    continue
            except (psutil.Error, ProcessLookupError):
                continue
            out[proc.pid] = _cmdline(proc.pid)
        return sorted(out.items())

    # --- talking to it ------------------------------------------------------------------

    def supctl(
        self, *args: str, timeout: float = SUPCTL_TIMEOUT, json_output: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``supctl -s SOCKET [--json] ARGS...``; the finished process."""
        argv = [PYTHON, "-m", "supervisord_lite.supctl", "-s", self.sock]
        if json_output:
            argv.append("--json")
        env = {k: v for k, v in os.environ.items() if k not in ("SUPCTL_SOCKET",)}
        env["NO_COLOR"] = "1"
        return subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
            env=env,
            check=False,
        )

    def supctl_ok(
        self, *args: str, timeout: float = SUPCTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """supctl that must succeed (exit 0)."""
        cp = self.supctl(*args, timeout=timeout)
        assert cp.returncode == 0, (
            f"supctl {' '.join(args)} exited {cp.returncode}\n"
            f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
        )
        return cp

    def status(self) -> dict[str, Any]:
        """The ``result`` of ``supctl --json status`` (the last JSON line)."""
        cp = self.supctl("status", json_output=True)
        assert cp.returncode in STATUS_ANSWERED, (
            f"supctl status failed ({cp.returncode}): {cp.stderr}"
        )
        lines = [line for line in cp.stdout.splitlines() if line.strip()]
        final = json.loads(lines[-1])
        assert final.get("ok"), final
        result: dict[str, Any] = final["result"]
        self._note_status(result)
        return result

    def http_status(self) -> dict[str, Any]:
        """GET /status from the HTTP API (cheaper than supctl, for fast polling)."""
        code, body = self.http("/status")
        assert code == 200, (code, body)
        result: dict[str, Any] = json.loads(body)
        self._note_status(result)
        return result

    def http(self, path: str) -> tuple[int, bytes]:
        assert self.http_port is not None, "this daemon has no HTTP API"
        return http_get("127.0.0.1", self.http_port, path)

    def _note_status(self, result: dict[str, Any]) -> None:
        pids = [
            inst["pid"]
            for app in result.get("apps", {}).values()
            for inst in app.get("instances", {}).values()
            if inst.get("pid")
        ]
        self.remember(pids)
        self.record_tree()

    def instance(self, app: str, inst: str, fast: bool = False) -> dict[str, Any]:
        status = self.http_status() if fast else self.status()
        result: dict[str, Any] = status["apps"][app]["instances"][inst]
        return result

    def pid(self, app: str, inst: str = "primary") -> int:
        """The pid of a RUNNING-or-STARTING instance (fails when it has none)."""
        pid = self.instance(app, inst)["pid"]
        assert isinstance(pid, int), f"{app}:{inst} has no pid"
        return pid

    def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "condition"
    ) -> T:
        """Poll ``predicate`` until truthy, remembering the daemon's children meanwhile."""

        def probe() -> T | None:
            self.record_tree()
            return predicate()

        return wait_until(probe, timeout, what, describe=self._describe)

    def _describe(self) -> str:
        states: dict[str, Any]
        try:
            states = {
                f"{a}:{i}": (v["state"], v["pid"], v.get("last_error"))
                for a, app in self.status()["apps"].items()
                for i, v in app["instances"].items()
            }
        except Exception as exc:  # the daemon may be gone: say so instead
            states = {"status": repr(exc)}
        return f"states: {states}\n--- daemon output (tail) ---\n{self.output(40)}"

    def wait_state(
        self,
        app: str,
        inst: str,
        states: str | tuple[str, ...],
        timeout: float = 10.0,
        fast: bool = True,
    ) -> dict[str, Any]:
        """Wait until ``app:inst`` is in one of ``states``; its status."""
        wanted = (states,) if isinstance(states, str) else states

        def check() -> dict[str, Any] | None:
            info = self.instance(app, inst, fast=fast and self.http_port is not None)
            return info if info["state"] in wanted else None

        return self.wait_for(check, timeout, f"{app}:{inst} to be {'/'.join(wanted)}")

    def wait_running(self, app: str, *instances: str, timeout: float = 10.0) -> dict[str, int]:
        """Wait until each instance is RUNNING; their pids."""
        return {
            inst: self.wait_state(app, inst, "RUNNING", timeout)["pid"]
            for inst in instances or ("primary",)
        }

    # --- files --------------------------------------------------------------------------

    def output(self, lines: int | None = None) -> str:
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return ""
        if lines is None:
            return text
        return "\n".join(text.splitlines()[-lines:])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log records (optionally only those with ``event == name``)."""
        out: list[dict[str, Any]] = []
        for line in self.output().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if name is None or record.get("event") == name:
                out.append(record)
        return out

    def log_file(self, app: str, inst: str) -> Path:
        return self.state_dir / "logs" / f"{app}.{inst}.log"

    def zombie_children(self) -> list[int]:
        """The daemon's direct children that are zombies (exited and not reaped)."""
        if self.proc is None:
            return []
        return [p for p in children_of(self.proc.pid) if proc_state(p) == "Z"]


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.Error:
        return "?"


@contextlib.contextmanager
def running_daemon(
    root: Path, apps: dict[str, dict[str, Any]], **kw: Any
) -> Iterator[RunningDaemon]:
    """``with running_daemon(tmp_path, {...}) as d:`` -- started, and checked on exit."""
    d = RunningDaemon(root, apps, **kw)
    try:
        d.start()
        yield d
    finally:
        d.close()
