"""The control socket server against a fake supervisor, over a real unix socket."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from helpers.fake_control import (
    BROKEN_OUTPUT,
    DEADLINE,
    FakeAPI,
    RawClient,
    ServerThread,
    ask,
    fake_status,
)

from supervisord_lite.control import protocol
from supervisord_lite.control.commands import COMMANDS
from supervisord_lite.control.commands.dispatch import HANDLERS
from supervisord_lite.control.peers import PeerCredentials, peer_allowed, peer_credentials
from supervisord_lite.control.server import ControlServer
from supervisord_lite.errors import DaemonLocked, OperationFailed
from supervisord_lite.log import capture_logs

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
            wait_until(lambda: fake.waiting == 1, DEADLINE, "the start to reach the gate")
        server.open_gate()
        wait_until(lambda: "start slow" in fake.completed, DEADLINE, "the start to complete")
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
        wait_until(
            lambda: fake.waiting == len(clients), DEADLINE, "every start to be in flight at once"
        )
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
        wait_until(lambda: fake.followers == 1, DEADLINE, "the follower to subscribe")
        server.push_log("new one")
        server.push_log("new two")
        assert [client.recv() for _ in range(2)] == [
            {"id": 1, "event": "log", "line": "new one"},
            {"id": 1, "event": "log", "line": "new two"},
        ]
    wait_until(lambda: fake.follows_ended == 1, DEADLINE, "the server to notice the hang-up")
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
        wait_until(lambda: fake.waiting == 1, DEADLINE, "the shutdown to be in flight")
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
        wait_until(lambda: fake.followers == 1, DEADLINE, "the follower to subscribe")
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
