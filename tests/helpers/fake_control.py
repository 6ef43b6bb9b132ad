"""A fake supervisor behind the real control server, for supctl and protocol tests.

:class:`FakeAPI` answers every :class:`SupervisorAPI` call from canned data (and
records what it was asked); :class:`ServerThread` runs the real
:class:`ControlServer` over it on a unix socket in a thread of its own;
:class:`RawClient` speaks the wire protocol by hand.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from supervisord_lite import snapshots
from supervisord_lite.control import protocol
from supervisord_lite.control.commands.call import Progress
from supervisord_lite.control.server import ControlServer
from supervisord_lite.errors import NoSuchApp, OperationFailed

if TYPE_CHECKING:  # the API's slices are declared for the type checker only
    from supervisord_lite.control.commands.dispatch import SupervisorAPI

T = TypeVar("T")
DEADLINE = 10.0  # seconds any awaited condition gets before the test fails

# --------------------------------------------------------------------------- fake


def _instance(app: str, name: str, state: str, **kw: Any) -> snapshots.InstanceStatus:
    fields: dict[str, Any] = {
        "pid": None,
        "generation": 1,
        "uptime_s": None,
        "restarts": 0,
        "exit_status": None,
        "ready": state == "RUNNING",
        "healthy": None,
        "release": None,
        "listen": None,
        "rss_bytes": None,
        "cpu_percent": None,
    }
    fields.update(kw)
    return snapshots.InstanceStatus(app=app, name=name, state=state, **fields)


def fake_status() -> snapshots.SupervisorStatus:
    """Two apps: web (primary running, backup starting) and a fatal worker."""
    web = snapshots.AppStatus(
        name="web",
        state="STARTING",
        release="r42",
        instances={
            "primary": _instance(
                "web",
                "primary",
                "RUNNING",
                pid=1234,
                uptime_s=192.5,
                healthy=True,
                release="r42",
                rss_bytes=50 * 1024 * 1024,
            ),
            "backup": _instance(
                "web", "backup", "STARTING", pid=1240, uptime_s=3.2, restarts=2, release="r42"
            ),
        },
    )
    worker = snapshots.AppStatus(
        name="worker",
        state="FATAL",
        release=None,
        instances={
            "0": _instance(
                "worker", "0", "FATAL", restarts=5, last_error="exited with status 1 (5 times)"
            )
        },
    )
    info = snapshots.SupervisorInfo(
        pid=99, version="0.1.0", uptime_s=600.0, state="running", config="/etc/x.yaml"
    )
    return snapshots.SupervisorStatus(supervisor=info, apps={"web": web, "worker": worker})


BROKEN_OUTPUT = ["Traceback (most recent call last):", "ImportError: No module named 'flask'"]


class FakeAPI:
    """A scripted supervisor. Apps: web, worker, and behaviours by name.

    ``slow`` waits at :attr:`gate` (set it through :meth:`ServerThread.call`),
    ``broken`` fails to start with output lines, ``buggy`` raises a plain exception.
    Lists are appended on the server thread and read by tests (append is atomic).
    """

    INSTANCES = {
        "web": ["primary", "backup"],
        "worker": ["0"],
        "slow": ["primary"],
        "broken": ["primary"],
        "buggy": ["primary"],
    }

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.completed: list[str] = []
        self.waiting = 0  # operations currently held at the gate
        self.gate = asyncio.Event()
        self.log_lines = [f"line {i}" for i in range(1, 101)]
        self.log_queue: asyncio.Queue[str] = asyncio.Queue()
        self.followers = 0
        self.follows_ended = 0
        self.update_result: dict[str, Any] = {"added": ["api"], "removed": [], "changed": ["web"]}
        self.recorded: list[dict[str, Any]] = []  # what record_command was told

    def _check(self, app: str, instance: str | None = None) -> list[str]:
        if app not in self.INSTANCES:
            raise NoSuchApp(f"no such app: {app!r}", app=app)
        if instance is not None and instance not in self.INSTANCES[app]:
            raise NoSuchApp(f"no such instance: {app}:{instance}", app=app)
        return [instance] if instance else self.INSTANCES[app]

    async def _hold(self) -> None:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1

    def status(self, app: str | None) -> snapshots.SupervisorStatus:
        self.calls.append(("status", app))
        status = fake_status()
        if app is None:
            return status
        if app not in status.apps:
            raise NoSuchApp(f"no such app: {app!r}", app=app)
        return snapshots.SupervisorStatus(status.supervisor, {app: status.apps[app]})

    async def start(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        self.calls.append(("start", app, instance))
        names = self._check(app, instance)
        if app == "buggy":
            raise RuntimeError("the fake has a bug")
        for name in names:
            progress("STARTING", {"app": app, "instance": name, "state": "STARTING", "pid": 4242})
        if app == "broken":
            raise OperationFailed(
                "broken:primary exited with status 1 before it was ready",
                exit_status=1,
                output=BROKEN_OUTPUT,
            )
        if app == "slow":
            await self._hold()
        for name in names:
            progress("ready", {"app": app, "instance": name, "state": "RUNNING", "pid": 4242})
        self.completed.append(f"start {app}")
        return {"started": [f"{app}:{name}" for name in names]}

    async def stop(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        self.calls.append(("stop", app, instance))
        self._check(app, instance)
        return {}

    async def restart(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        self.calls.append(("restart", app, instance))
        self._check(app, instance)
        return {}

    async def signal(self, app: str, instance: str | None, signum: int) -> dict[str, Any]:
        self.calls.append(("signal", app, instance, signum))
        self._check(app, instance)
        return {}

    def log_tail(self, app: str, instance: str | None, lines: int) -> list[str]:
        self.calls.append(("log_tail", app, instance, lines))
        self._check(app, instance)
        return self.log_lines[-lines:] if lines else []

    async def follow_logs(self, app: str, instance: str | None) -> AsyncIterator[str]:
        self.calls.append(("follow_logs", app, instance))
        self._check(app, instance)
        self.followers += 1
        try:
            while True:
                yield await self.log_queue.get()
        finally:
            self.followers -= 1
            self.follows_ended += 1

    async def reload(self, apps: list[str], progress: Progress) -> dict[str, Any]:
        self.calls.append(("reload", apps))
        for app in apps:
            self._check(app)
        return {"reloaded": apps or sorted(self.INSTANCES)}

    async def update(self, progress: Progress, allow_empty: bool = False) -> dict[str, Any]:
        self.calls.append(("update",))
        return self.update_result

    async def plan(self, allow_empty: bool = False) -> dict[str, Any]:
        self.calls.append(("plan", allow_empty))
        return {"changes": False, "text": ["nothing to do"]}

    async def deploy(
        self,
        app: str,
        release: str,
        pause: bool,
        progress: Progress,
        artifact: str | None = None,
        sha256: str | None = None,
        uid: int | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("deploy", app, release, pause))
        self._check(app)
        progress("deploying", {"app": app, "instance": "backup", "release": release})
        return {"release": release, "paused": pause}

    async def promote(self, app: str, progress: Progress, uid: int | None = None) -> dict[str, Any]:
        self.calls.append(("promote", app))
        self._check(app)
        return {}

    async def rollback(
        self, app: str, progress: Progress, uid: int | None = None
    ) -> dict[str, Any]:
        self.calls.append(("rollback", app))
        self._check(app)
        return {"message": f"{app}: rolled back to r41"}

    async def upgrade(self, progress: Progress) -> dict[str, Any]:
        self.calls.append(("upgrade",))
        return {}

    async def shutdown(self, progress: Progress) -> dict[str, Any]:
        self.calls.append(("shutdown",))
        progress("stopping everything", {})
        await self._hold()
        self.completed.append("shutdown")
        return {}

    def history(self, app: str | None, count: int) -> list[dict[str, Any]]:
        self.calls.append(("history", app, count))
        return list(reversed(self.recorded))[:count]

    def record_command(
        self,
        command: str,
        args: dict[str, Any],
        peer: tuple[int, int, int] | None,
        error: dict[str, Any] | None,
        duration_s: float,
    ) -> None:
        self.recorded.append(
            {"command": command, "args": args, "peer": peer, "error": error, "secs": duration_s}
        )


def _typecheck_fake(api: FakeAPI) -> SupervisorAPI:
    return api  # mypy proves the fake satisfies the protocol the daemon must satisfy


# --------------------------------------------------------------------------- harness


class ServerThread:
    """A real ControlServer on a real unix socket, its event loop in a thread."""

    def __init__(
        self, path: str, api: FakeAPI, mode: int = 0o600, group_gid: int | None = None
    ) -> None:
        self.path = path
        self.api = api
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = ControlServer(path, api, mode, group_gid)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.close(grace=2.0))
        finally:
            self.run(_cancel_others())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(DEADLINE)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain callable on the server's loop (asyncio objects are not thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def open_gate(self) -> None:
        self.call(self.api.gate.set)

    def push_log(self, line: str) -> None:
        self.call(self.api.log_queue.put_nowait, line)


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class RawClient:
    """A hand-driven control-protocol client, to send what supctl never would."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, request_id: int | str, command: str, **args: Any) -> None:
        self.send_raw(protocol.encode(protocol.request(request_id, command, args)))

    def recv(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "the server hung up"
        return protocol.decode(line, limit=None)

    def final(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events up to, and the final response."""
        events: list[dict[str, Any]] = []
        while True:
            message = self.recv()
            if not protocol.is_event(message):
                return events, message
            events.append(message)

    def at_eof(self) -> bool:
        return self.file.readline() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ask(path: str, command: str, **args: Any) -> dict[str, Any]:
    with RawClient(path) as client:
        client.send(1, command, **args)
        return client.final()[1]
