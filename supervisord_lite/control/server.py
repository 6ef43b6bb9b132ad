"""The control socket server: who may talk to the daemon, and how a request is served.

Owns the daemon's end of the control protocol (:mod:`protocol` owns the wire format,
:mod:`commands` each command's declaration and handler): binding the unix socket with
its mode and group, checking each peer's credentials (SO_PEERCRED), reading requests,
running each through its command's handler (:data:`commands.dispatch.HANDLERS`) on
the :class:`SupervisorAPI`, and turning every outcome into exactly one final
response. Nothing a client does -- garbage, oversized lines, hanging up midway -- may
stall or crash the daemon, and a client that hangs up never cancels an operation it
started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

from ..errors import (
    DaemonLocked,
    ErrorCode,
    OperationFailed,
    PermissionDenied,
    ProtocolError,
    SupervisorError,
)
from ..host.accepting import Listener
from ..log import get_logger
from . import protocol
from .commands import lookup
from .commands.call import Call, Handler
from .commands.dispatch import HANDLERS
from .peers import PeerCredentials, peer_allowed, peer_credentials

if TYPE_CHECKING:
    from .commands.dispatch import SupervisorAPI

log = get_logger(__name__)
_Socket = socket.socket  # (inside ControlServer, ``socket`` is its property)

# --------------------------------------------------------------------------- connections


class _Connection:
    """One client: writes that never raise, and a way to notice the client hanging up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ended = False  # no further requests are read on this connection
        self.peer: PeerCredentials | None = None

    @property
    def gone(self) -> bool:
        return self.writer.is_closing()

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message; silently dropped once the client has gone.

        Synchronous so that operations can report progress from plain callbacks; the
        output is dropped, not the operation, when the client has hung up.
        """
        if self.gone:
            return
        try:
            data = protocol.encode_unbounded(message)
        except (TypeError, ValueError) as exc:
            log.error("control_unencodable", what=message.get("event", "response"), error=str(exc))
            if protocol.is_event(message):
                return  # an event that cannot be sent is not worth failing the request for
            data = protocol.encode_unbounded(
                protocol.error_response(
                    message.get("id"),
                    {"code": ErrorCode.INTERNAL.value, "message": f"unencodable response: {exc}"},
                )
            )
        # The transport may have closed under us: then the client is gone, nothing to do.
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(data)

    async def flush(self) -> bool:
        """Wait until the client has taken what was sent; False once it is gone."""
        if self.gone:
            return False
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def wait_hangup(self) -> None:
        """Return when the client closes its end or sends anything more (ends a stream)."""
        with contextlib.suppress(ConnectionError):
            await self.reader.read(4096)

    async def close(self) -> None:
        # close() lets the transport flush what is buffered before it lets go.
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# --------------------------------------------------------------------------- server


class ControlServer:
    """The daemon's unix control socket.

    ``mode`` and ``group_gid`` set the socket file's permissions; peers must in
    addition be root, the daemon's user or members of ``group_gid``. ``sock`` adopts
    an already listening socket (one inherited across an ``upgrade`` re-exec) instead
    of binding ``path``.
    """

    def __init__(
        self,
        path: str,
        api: SupervisorAPI,
        mode: int = 0o600,
        group_gid: int | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        self.path = path
        self.api = api
        self.mode = mode
        self.group_gid = group_gid
        self._sock = sock
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we bound
        self._listener: Listener | None = None
        self._starting: set[asyncio.Task[None]] = set()  # each accepted connection's task
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._operations: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()
        self._daemon_uid = os.geteuid()

    @property
    def socket(self) -> socket.socket | None:
        """The listening socket (to hand down across a re-exec), once started."""
        return self._sock

    async def start(self) -> None:
        """Bind (unless a socket was adopted) and begin accepting clients."""
        if self._sock is None:
            self._sock = _bind(self.path, self.mode, self.group_gid)
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
        refusal = protocol.encode(
            protocol.error_response(
                None,
                OperationFailed(
                    "the daemon is out of file descriptors and cannot take this request; try again"
                ).to_wire(),
            )
        )
        # not asyncio.start_unix_server: its accept loop spins when out of descriptors
        self._listener = Listener(self._sock, "control", self._accepted, refusal)
        self._listener.start()
        log.info("control_listening", path=self.path)

    async def close(self, grace: float = 5.0, unlink: bool = True) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), hang up.

        Requests in flight include the one that asked for a shutdown, so its answer
        reaches supctl; call this after ``shutdown()`` returned, not from inside it
        (it never waits for the task that calls it, but that request's answer would
        then find its connection closed).
        """
        if self._listener is not None:
            self._listener.close()  # (an upgrade has dup'ed the socket: it stays open)
        if unlink:  # an upgrade keeps the socket (and its file) for the next image
            self._unlink_own_socket()
        for task in self._streams:
            task.cancel()  # a log follow would otherwise run until its client quits
        current = asyncio.current_task()
        pending = {task for task in self._operations if task is not current}
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            if late:
                log.warning("control_close_requests_running", count=len(late))
        for task in self._starting:
            if task not in self._connections:
                task.cancel()  # accepted, its streams not yet set up: nothing to finish
        for conn in list(self._connections.values()):
            await conn.close()
        tasks = [task for task in self._connections if task is not current]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=grace)
            for task in stuck:
                task.cancel()
        self._listener = None

    def _unlink_own_socket(self) -> None:
        # Only our own file: a successor daemon may already have bound this path.
        if self._identity is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        self._identity = None

    def _accepted(self, conn: _Socket) -> None:
        task = asyncio.get_running_loop().create_task(self._open(conn))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _open(self, conn: _Socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=protocol.MAX_LINE)
        except BaseException:
            conn.close()
            raise
        await self._on_connect(reader, writer)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = conn
        try:
            peer = peer_credentials(writer.get_extra_info("socket"))
            conn.peer = peer
            if not peer_allowed(peer, self._daemon_uid, self.group_gid):
                log.warning("control_peer_refused", pid=peer.pid, uid=peer.uid, gid=peer.gid)
                conn.send(protocol.error_response(None, self._refusal(peer).to_wire()))
                await conn.flush()
                return
            await self._serve(conn)
        except asyncio.CancelledError:
            # Only close() cancels connections, after their grace; the task ends here.
            pass
        except Exception:
            log.exception("control_connection_failed")
        finally:
            del self._connections[task]
            await conn.close()

    def _refusal(self, peer: PeerCredentials) -> PermissionDenied:
        allowed = f"root, uid {self._daemon_uid}"
        if self.group_gid is not None:
            allowed += f" or members of gid {self.group_gid}"
        return PermissionDenied(
            f"permission denied: uid {peer.uid} may not use this control socket"
            f" (allowed: {allowed})",
            uid=peer.uid,
        )

    async def _serve(self, conn: _Connection) -> None:
        """Read and answer requests one after another until the client leaves."""
        while not conn.ended:
            try:
                line = await conn.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return  # EOF; a partial last line without its newline is not a request
            except asyncio.LimitOverrunError:
                # The rest of the line would read as garbage: answer once, then hang up.
                error = ProtocolError(f"request line exceeds the {protocol.MAX_LINE}-byte limit")
                conn.send(protocol.error_response(None, error.to_wire()))
                await conn.flush()
                return
            except ConnectionError:
                return
            if line.strip():
                await self._request(conn, line)

    async def _request(self, conn: _Connection, line: bytes) -> None:
        """Answer one request line; the operation itself runs in its own task."""
        request_id: int | str | None = None
        try:
            message = protocol.decode(line)
            raw_id = message.get("id")
            if isinstance(raw_id, int | str) and not isinstance(raw_id, bool):
                request_id = raw_id  # so that even a malformed request's error carries it
            request_id, command, raw_args = protocol.parse_request(message)
            spec = lookup(command)
            args = protocol.validate_args(spec, raw_args)
        except SupervisorError as exc:
            conn.send(protocol.error_response(request_id, exc.to_wire()))
            await conn.flush()
            return
        log.debug("control_request", command=command, args=raw_args)
        uid = conn.peer.uid if conn.peer is not None else None
        call = Call(self.api, spec, request_id, args, conn, raw_args, uid)
        operation = asyncio.ensure_future(self._execute(HANDLERS[spec.name], call, conn.peer))
        self._operations.add(operation)
        operation.add_done_callback(self._operations.discard)
        if spec.streaming(args):
            self._streams.add(operation)
            operation.add_done_callback(self._streams.discard)
        # shield: a connection torn down mid-operation must not cancel the operation.
        await asyncio.shield(operation)

    async def _execute(
        self,
        handler: Handler[SupervisorAPI],
        call: Call[SupervisorAPI],
        peer: PeerCredentials | None,
    ) -> None:
        """Run one handler and send its one final response (dropped if the client left)."""
        started = time.monotonic()
        try:
            result = await handler(call)
        except asyncio.CancelledError:
            # only streams are cancelled (by close()): end them with an answer, so the
            # client knows the daemon is going away rather than that it broke
            call.conn.send(
                protocol.ok_response(
                    call.request_id,
                    {"followed": None, "message": "the daemon is shutting down"},
                )
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.conn.flush(), 1.0)
            raise
        except SupervisorError as exc:
            response = protocol.error_response(call.request_id, exc.to_wire())
        except Exception as exc:
            log.exception("control_request_failed", id=call.request_id)
            error = {"code": ErrorCode.INTERNAL.value, "message": f"internal error: {exc!r}"}
            response = protocol.error_response(call.request_id, error)
        else:
            response = protocol.ok_response(call.request_id, result)
        self._record(call, peer, response, time.monotonic() - started)  # before the client hears
        call.conn.send(response)
        await call.conn.flush()

    def _record(
        self,
        call: Call[SupervisorAPI],
        peer: PeerCredentials | None,
        response: dict[str, Any],
        duration_s: float,
    ) -> None:
        """Put a command that may change something into the history, with its caller."""
        if call.spec.read_only:
            return
        try:
            self.api.record_command(
                call.spec.name,
                call.raw_args,
                (peer.pid, peer.uid, peer.gid) if peer is not None else None,
                response.get("error"),
                duration_s,
            )
        except Exception:  # the history must never cost a command its answer
            log.exception("history_record_failed", command=call.spec.name)


def _bind(path: str, mode: int, group_gid: int | None) -> socket.socket:
    """A listening unix socket at ``path``, never more open than ``mode`` allows."""
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind() creates the file with the umask's permissions; set the umask so the
        # socket is never, even for a moment, more open than asked. (No await happens
        # in between, so no other code of this process runs while it is changed.)
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        if group_gid is not None:
            os.chown(path, -1, group_gid)
        os.chmod(path, mode)  # the umask can only take bits away; set exactly `mode`
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: str) -> None:
    """Unlink a socket left by a dead daemon; refuse to touch a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OperationFailed(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live daemon with a full backlog must not block us
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # nobody listens: stale
    except BlockingIOError:
        raise DaemonLocked(f"another daemon is listening on {path}") from None
    else:
        raise DaemonLocked(f"another daemon is listening on {path}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
