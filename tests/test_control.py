"""The control socket server against a fake supervisor, over a real unix socket.

Also home of the fake :class:`SupervisorAPI` and the threaded server harness that
``test_supctl`` reuses (there is no shared conftest for these yet).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from supervisord_lite import snapshots
from supervisord_lite.control import protocol
from supervisord_lite.control.commands import COMMANDS
from supervisord_lite.control.commands.call import Progress
from supervisord_lite.control.commands.dispatch import HANDLERS
from supervisord_lite.control.peers import PeerCredentials, peer_allowed, peer_credentials
from supervisord_lite.control.server import ControlServer
from supervisord_lite.errors import DaemonLocked, NoSuchApp, OperationFailed
from supervisord_lite.log import capture_logs

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

    async def promote(self, app: str, progress: Progress) -> dict[str, Any]:
        self.calls.append(("promote", app))
        self._check(app)
        return {}

    async def rollback(self, app: str, progress: Progress) -> dict[str, Any]:
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


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


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


@pytest.fixture
def fake() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def server(tmp_path: Path, fake: FakeAPI) -> Iterator[ServerThread]:
    with ServerThread(str(tmp_path / "supctl.sock"), fake) as srv:
        yield srv


def ask(path: str, command: str, **args: Any) -> dict[str, Any]:
    with RawClient(path) as client:
        client.send(1, command, **args)
        return client.final()[1]


# --------------------------------------------------------------------------- tests


def test_every_command_has_a_handler() -> None:
    """The handler table and the command registry name exactly the same commands."""
    assert set(HANDLERS) == set(COMMANDS)


def test_status_round_trip(server: ServerThread) -> None:
    """A status request is answered with the supervisor's snapshot as JSON."""
    response = ask(server.path, "status")
    status = fake_status()
    expected = {**status.to_json(), "unhealthy": status.unhealthy()}
    assert response == {"id": 1, "ok": True, "result": expected}


def test_requests_in_sequence_on_one_connection(server: ServerThread, fake: FakeAPI) -> None:
    """One connection carries several requests, each answered with its own id."""
    with RawClient(server.path) as client:
        client.send(1, "status", app="web")
        client.send("two", "signal", target="web:backup", signal="HUP")
        first = client.final()[1]
        second = client.final()[1]
    assert first["id"] == 1 and list(first["result"]["apps"]) == ["web"]
    assert second == {"id": "two", "ok": True, "result": {}}
    assert ("signal", "web", "backup", 1) in fake.calls


def test_no_such_app_error(server: ServerThread) -> None:
    """A SupervisorError from the API becomes an error response with its code and details."""
    response = ask(server.path, "stop", target="nope")
    assert response["ok"] is False
    assert response["error"] == {
        "code": "no_such_app",
        "message": "no such app: 'nope'",
        "app": "nope",
    }


def test_progress_events_precede_the_final_response(server: ServerThread) -> None:
    """Progress reported by an operation reaches the client as events, then the result."""
    with RawClient(server.path) as client:
        client.send(7, "start", target="web")
        events, final = client.final()
    assert [(e["event"], e["instance"], e["state"]) for e in events] == [
        ("progress", "primary", "STARTING"),
        ("progress", "backup", "STARTING"),
        ("progress", "primary", "RUNNING"),
        ("progress", "backup", "RUNNING"),
    ]
    assert all(e["id"] == 7 and e["pid"] == 4242 for e in events)
    assert final == {"id": 7, "ok": True, "result": {"started": ["web:primary", "web:backup"]}}


def test_failed_operation_carries_output(server: ServerThread) -> None:
    """An OperationFailed's details, such as the app's last output, travel in the error."""
    response = ask(server.path, "start", target="broken")
    assert response["error"]["code"] == "failed"
    assert response["error"]["output"] == BROKEN_OUTPUT
    assert response["error"]["exit_status"] == 1


def test_garbage_line_gets_protocol_error_and_server_keeps_serving(server: ServerThread) -> None:
    """A line that is not JSON is answered with a protocol error; the connection goes on."""
    with RawClient(server.path) as client:
        client.send_raw(b"this is not json\n")
        error = client.recv()
        client.send_raw(b"\xff\xfe\n")
        bad_utf8 = client.recv()
        client.send(2, "status")
        ok = client.final()[1]
    assert error["id"] is None and error["ok"] is False
    assert error["error"]["code"] == "protocol"
    assert "invalid JSON" in error["error"]["message"]
    assert bad_utf8["error"]["code"] == "protocol"
    assert ok["ok"] is True
    assert ask(server.path, "status")["ok"] is True


@pytest.mark.parametrize(
    ("line", "request_id", "fragment"),
    [
        (b"[1, 2]\n", None, "expected a JSON object"),
        (b'{"command": "status"}\n', None, "'id'"),
        (b'{"id": 3}\n', 3, "'command'"),
        (b'{"id": 4, "command": "status", "args": [1]}\n', 4, "'args'"),
        (b'{"id": 5, "command": "frobnicate", "args": {}}\n', 5, "unknown command 'frobnicate'"),
    ],
)
def test_malformed_requests_get_protocol_errors(
    server: ServerThread, line: bytes, request_id: int | None, fragment: str
) -> None:
    """Well-formed JSON that is not a valid request is refused with code protocol."""
    with RawClient(server.path) as client:
        client.send_raw(line)
        response = client.recv()
    assert response["id"] == request_id
    assert response["error"]["code"] == "protocol"
    assert fragment in response["error"]["message"]


@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        ("signal", {"target": "web", "signal": "FOO"}, "bad signal 'FOO'"),
        ("start", {}, "missing argument APP[:INSTANCE]"),
        ("start", {"target": "web", "force": True}, "unknown argument(s): force"),
        ("logs", {"target": "web", "lines": -1}, "must be at least 0"),
        ("start", {"target": "web:"}, "bad target 'web:'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    server: ServerThread, fake: FakeAPI, command: str, args: dict[str, Any], fragment: str
) -> None:
    """The daemon validates arguments against the registry before calling the API."""
    response = ask(server.path, command, **args)
    assert response["error"]["code"] == "usage"
    assert fragment in response["error"]["message"]
    assert fake.calls == []


def test_line_at_the_limit_is_accepted(server: ServerThread) -> None:
    """A request of exactly MAX_LINE bytes (padded with spaces) is still served."""
    body = protocol.encode(protocol.request(1, "status", {}))[:-1]
    with RawClient(server.path) as client:
        client.send_raw(body + b" " * (protocol.MAX_LINE - len(body)) + b"\n")
        assert client.final()[1]["ok"] is True


def test_oversized_line_is_refused_and_server_keeps_serving(server: ServerThread) -> None:
    """A line over MAX_LINE gets a protocol error and a hang-up; other clients are fine."""
    with RawClient(server.path) as client:
        client.send_raw(b"x" * (protocol.MAX_LINE + 1))
        response = client.recv()
        assert client.at_eof()
    assert response["error"]["code"] == "protocol"
    assert "exceeds" in response["error"]["message"]
    assert ask(server.path, "status")["ok"] is True


def test_client_hanging_up_midway_does_not_cancel_the_operation(
    server: ServerThread, fake: FakeAPI
) -> None:
    """A client that disconnects mid-operation loses the output, not the operation."""
    with capture_logs() as logs:
        with RawClient(server.path) as client:
            client.send(1, "start", target="slow")
            assert client.recv()["state"] == "STARTING"
            wait_for(lambda: fake.waiting == 1, "the start to reach the gate")
        server.open_gate()
        wait_for(lambda: "start slow" in fake.completed, "the start to complete")
        assert ask(server.path, "status")["ok"] is True
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []


def test_unexpected_exception_is_internal_error(server: ServerThread) -> None:
    """A bug in the API is reported as code internal, logged, and the server keeps serving."""
    with capture_logs() as logs:
        response = ask(server.path, "start", target="buggy")
    assert response["error"]["code"] == "internal"
    assert "the fake has a bug" in response["error"]["message"]
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "control_request_failed"
    ]
    assert ask(server.path, "status")["ok"] is True


def test_unencodable_result_is_internal_error(server: ServerThread, fake: FakeAPI) -> None:
    """A result JSON cannot carry becomes an internal error, not a dropped connection."""
    fake.update_result = {"when": object()}
    response = ask(server.path, "update")
    assert response["error"]["code"] == "internal"


def test_concurrent_clients(server: ServerThread, fake: FakeAPI) -> None:
    """Many clients are served at once: slow operations overlap, status still answers."""
    clients = [RawClient(server.path) for _ in range(8)]
    try:
        for i, client in enumerate(clients):
            client.send(i, "start", target="slow")
        wait_for(lambda: fake.waiting == len(clients), "every start to be in flight at once")
        assert ask(server.path, "status")["ok"] is True
        server.open_gate()
        finals = [client.final()[1] for client in clients]
    finally:
        for client in clients:
            client.close()
    assert [f["id"] for f in finals] == list(range(len(clients)))
    assert all(f["ok"] for f in finals)


def test_logs_tail(server: ServerThread, fake: FakeAPI) -> None:
    """logs without -f answers with the last N lines (default 50)."""
    assert ask(server.path, "logs", target="web", lines=3)["result"] == {
        "lines": ["line 98", "line 99", "line 100"]
    }
    assert len(ask(server.path, "logs", target="web")["result"]["lines"]) == 50


def test_logs_follow_streams_until_the_client_hangs_up(server: ServerThread, fake: FakeAPI) -> None:
    """logs -f sends the tail, then new lines as they come; a hang-up ends the stream."""
    with RawClient(server.path) as client:
        client.send(1, "logs", target="web:primary", follow=True, lines=2)
        assert [client.recv()["line"] for _ in range(2)] == ["line 99", "line 100"]
        wait_for(lambda: fake.followers == 1, "the follower to subscribe")
        server.push_log("new one")
        server.push_log("new two")
        assert [client.recv() for _ in range(2)] == [
            {"id": 1, "event": "log", "line": "new one"},
            {"id": 1, "event": "log", "line": "new two"},
        ]
    wait_for(lambda: fake.follows_ended == 1, "the server to notice the hang-up")
    assert fake.followers == 0
    assert ask(server.path, "status")["ok"] is True


def test_logs_follow_of_unknown_app(server: ServerThread) -> None:
    """logs -f of an unknown app fails at once with no_such_app."""
    assert ask(server.path, "logs", target="nope", follow=True)["error"]["code"] == "no_such_app"


def test_close_lets_the_request_in_flight_answer(server: ServerThread, fake: FakeAPI) -> None:
    """close() waits for a request in flight (a shutdown) so its answer reaches the client."""
    with RawClient(server.path) as client:
        client.send(1, "shutdown")
        assert client.recv()["message"] == "stopping everything"
        wait_for(lambda: fake.waiting == 1, "the shutdown to be in flight")
        closing = asyncio.run_coroutine_threadsafe(server.server.close(grace=DEADLINE), server.loop)
        server.open_gate()
        assert client.final()[1] == {"id": 1, "ok": True, "result": {}}
        closing.result(DEADLINE)
        assert client.at_eof()
    assert not os.path.exists(server.path)


def test_close_ends_log_follows(server: ServerThread, fake: FakeAPI) -> None:
    """close() does not wait for a log follow to end on its own; the follower gets a final
    answer saying the daemon is shutting down, then the connection ends."""
    with RawClient(server.path) as client:
        client.send(1, "logs", target="web", follow=True, lines=0)
        wait_for(lambda: fake.followers == 1, "the follower to subscribe")
        started = time.monotonic()
        server.run(server.server.close(grace=DEADLINE))
        assert time.monotonic() - started < DEADLINE / 2
        _, final = client.final()
        assert final["ok"] is True and "shutting down" in final["result"]["message"]
        assert client.at_eof()
    assert fake.follows_ended == 1


def test_socket_file_mode_and_group(tmp_path: Path, fake: FakeAPI) -> None:
    """The socket file gets exactly the configured mode and group."""
    path = str(tmp_path / "ctl.sock")
    with ServerThread(path, fake, mode=0o660, group_gid=12345):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == 12345


def test_stale_socket_is_replaced(tmp_path: Path, fake: FakeAPI) -> None:
    """A socket file left by a dead daemon is removed and bound anew."""
    path = str(tmp_path / "ctl.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)  # bound, never listening: what a killed daemon leaves behind
    with ServerThread(path, fake):
        assert ask(path, "status")["ok"] is True


def test_live_socket_is_not_stolen(server: ServerThread, fake: FakeAPI) -> None:
    """A second server refuses to unlink the socket of a daemon that still answers."""
    second = ControlServer(server.path, fake)
    with pytest.raises(DaemonLocked):
        asyncio.run(second.start())
    assert ask(server.path, "status")["ok"] is True


def test_regular_file_is_not_removed(tmp_path: Path, fake: FakeAPI) -> None:
    """A non-socket file at the socket path is an error, never deleted."""
    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    with pytest.raises(OperationFailed, match="not a socket"):
        asyncio.run(ControlServer(str(path), fake).start())
    assert path.read_text() == "precious"


@pytest.mark.parametrize(
    ("peer", "group", "allowed"),
    [
        (PeerCredentials(1, 0, 0), None, True),
        (PeerCredentials(1, 1000, 1000), None, True),  # the daemon's own uid
        (PeerCredentials(1, 1001, 1001), None, False),
        (PeerCredentials(1, 1001, 50), 50, True),  # primary group
        (PeerCredentials(1, 1001, 1001, (7, 50)), 50, True),  # supplementary group
        (PeerCredentials(1, 1001, 1001, (7,)), 50, False),
    ],
)
def test_peer_allowed(peer: PeerCredentials, group: int | None, allowed: bool) -> None:
    """Root, the daemon's uid and members of the configured group are let in."""
    assert peer_allowed(peer, 1000, group) is allowed


def test_own_peer_credentials_are_read(server: ServerThread) -> None:
    """SO_PEERCRED identifies this process, so it (the daemon's own uid) is served."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        creds = peer_credentials(a)
    assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert sorted(creds.groups) == sorted(os.getgroups())  # SO_PEERGROUPS
    assert ask(server.path, "status")["ok"] is True


def test_commands_are_recorded_with_the_callers_credentials(
    server: ServerThread, fake: FakeAPI
) -> None:
    """Each command that may change something is handed to the history, before its
    answer, with the peer's pid/uid/gid from SO_PEERCRED, its raw args and its result;
    read-only queries are not."""
    assert ask(server.path, "signal", target="web:backup", signal="HUP")["ok"]
    assert not ask(server.path, "stop", target="nope")["ok"]
    assert ask(server.path, "status")["ok"]
    response = ask(server.path, "history", count=5)
    assert [e["command"] for e in fake.recorded] == ["signal", "stop"]
    signal_call, stop_call = fake.recorded
    assert signal_call["peer"] == (os.getpid(), os.getuid(), os.getgid())
    assert signal_call["args"] == {"target": "web:backup", "signal": "HUP"}
    assert signal_call["error"] is None and signal_call["secs"] >= 0
    assert stop_call["error"]["code"] == "no_such_app"
    assert ("history", None, 5) in fake.calls
    assert [e["command"] for e in response["result"]["events"]] == ["stop", "signal"]
