"""Accepting connections without spinning when the daemon is out of descriptors (host).

asyncio's own accept loop (Python 3.11), when ``accept()`` fails with EMFILE, reports it
and schedules a retry a second later once for each of the up to ``backlog`` attempts of
that wake-up, so the retries multiply while the waiting connection never gets through:
measured with the daemon at its fd limit, about 400 failed ``accept()`` calls a second
and ``supctl status`` timing out. A :class:`Listener` does it the classic way instead:
it keeps one spare descriptor; when ``accept()`` fails for want of a descriptor it closes
the spare, accepts the waiting connection, answers it with a fixed refusal, closes it and
opens the spare again. Only when that cannot be done (the spare could not be reopened,
the kernel is out of memory) does it stop watching the socket for ``pause`` seconds.
Either way each ``accept()`` is for a connection that is waiting: no busy loop.

Both servers (the control socket and the HTTP API) accept through a Listener; the
counts of one episode (from the first failure to the next connection accepted normally)
are logged when it ends (``accept_fds_back``), so the cost of an episode is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..log import get_logger

__all__ = ["AcceptCounts", "Listener", "refuse"]

log = get_logger("accept")

# accept() failed for want of a descriptor: what the spare is for
_NO_FD = frozenset({errno.EMFILE, errno.ENFILE})
# accept() failed for want of memory: no spare helps, wait a little
_NO_MEMORY = frozenset({errno.ENOBUFS, errno.ENOMEM})
# what is read (and dropped) of a refused connection's request before the answer, so
# that closing it does not reset the connection under the answer (unread data -> RST)
_DRAIN_BYTES = 65536


@dataclass
class AcceptCounts:
    """What one out-of-descriptors episode cost (see the module's docstring)."""

    attempts: int = 0  # accept() calls
    refused: int = 0  # connections answered with the refusal for want of a descriptor
    pauses: int = 0  # times the socket was not watched for ``pause`` seconds
    since: float = 0.0  # monotonic time of the first failure


def refuse(conn: socket.socket, answer: bytes) -> None:
    """Answer an accepted connection with ``answer`` and close it at once.

    Never blocks: what the client sent already is read and dropped, ``answer`` (small:
    it fits the socket's buffer) is sent without waiting, and the connection closed.
    """
    try:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            dropped = 0
            while dropped < _DRAIN_BYTES and (chunk := conn.recv(_DRAIN_BYTES)):
                dropped += len(chunk)
        with contextlib.suppress(OSError):
            conn.send(answer)
            conn.shutdown(socket.SHUT_WR)
    finally:
        conn.close()


class Listener:
    """Accepts connections on ``sock`` and hands each to ``on_connection``.

    ``refusal`` is what a connection is answered when no descriptor is free to serve it
    (see the module's docstring). ``close`` stops watching the socket and closes it.
    """

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        on_connection: Callable[[socket.socket], None],
        refusal: bytes,
        *,
        pause: float = 1.0,
        batch: int = 64,
    ) -> None:
        self.sock = sock
        self.name = name
        self._on_connection = on_connection
        self._refusal = refusal
        self._pause = pause
        self._batch = batch  # connections taken per wake-up before others get the loop
        self._spare: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._episode: AcceptCounts | None = None  # while short of descriptors

    def start(self) -> None:
        """Begin accepting (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._spare = _open_spare()
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and close the listening socket; safe to call twice."""
        if self._loop is None:
            return
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        else:
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                self._count_attempt()
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nobody else is waiting
            except ConnectionAbortedError:
                continue  # the client gave up while it waited
            except OSError as exc:
                # (out of fds, accept() fails before it looks at the backlog: with one
                # connection refused, the next is for the next wake-up, if any waits)
                if exc.errno in _NO_FD and self._refuse_with_spare(exc):
                    return
                if exc.errno not in _NO_FD | _NO_MEMORY:
                    log.error("accept_failed", listener=self.name, error=str(exc))
                self._stop_watching(exc)
                return
            if self._episode is not None:
                self._episode_over()
            conn.setblocking(False)
            self._on_connection(conn)

    def _count_attempt(self) -> None:
        if self._episode is not None:
            self._episode.attempts += 1

    def _refuse_with_spare(self, exc: OSError) -> bool:
        """Free the spare to accept one waiting connection and refuse it; True also
        when none was waiting after all, False when there was no spare or the
        connection could not be taken even so."""
        self._note_shortage(exc)
        if self._spare is None:
            self._spare = _open_spare()
            if self._spare is None:
                return False
        os.close(self._spare)
        self._spare = None
        try:
            self._count_attempt()
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError:
            return False
        else:
            assert self._episode is not None
            self._episode.refused += 1
            refuse(conn, self._refusal)
            return True
        finally:
            # after the refused connection is closed: its number is the spare's again
            self._spare = _open_spare()

    def _stop_watching(self, exc: OSError) -> None:
        """Leave the socket alone for ``pause`` seconds (the waiting clients stay in its
        backlog), then look again."""
        self._note_shortage(exc)
        assert self._loop is not None and self._episode is not None
        self._episode.pauses += 1
        self._loop.remove_reader(self.sock.fileno())
        self._resume = self._loop.call_later(self._pause, self._watch_again)

    def _watch_again(self) -> None:
        self._resume = None
        if self._spare is None:
            self._spare = _open_spare()
        assert self._loop is not None
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def _note_shortage(self, exc: OSError) -> None:
        if self._episode is None:
            self._episode = AcceptCounts(attempts=1, since=time.monotonic())
            log.warning("accept_out_of_fds", listener=self.name, error=exc.strerror)

    def _episode_over(self) -> None:
        ep, self._episode = self._episode, None
        assert ep is not None
        log.info(
            "accept_fds_back",
            listener=self.name,
            attempts=ep.attempts,
            refused=ep.refused,
            pauses=ep.pauses,
            seconds=round(time.monotonic() - ep.since, 3),
        )


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
