"""The load generators: :class:`Load` (Python client threads, every answer checked)
and :class:`Wrk` (wrk, for throughput; it only counts errors).

Both are bounded in time (and :class:`Load` in count) so a test that never ends its
with-block cannot hammer forever.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from helpers import wait_until


def pid_in(body: bytes) -> int:
    """The pid an answer names: JSON ``{"pid": N}`` or a last word that is a number; -1."""
    text = body.decode(errors="replace").strip()
    try:
        return int(json.loads(text)["pid"])
    except (ValueError, KeyError, TypeError):
        return int(text.split()[-1]) if text.split() and text.split()[-1].isdigit() else -1


def _release_in(body: bytes) -> str:
    """The release an answer names (JSON ``{"release": ...}``), or ``?``."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("release") or "?")
    return "?"


class Load:
    """``threads`` clients, each sending ``GET /?n=N`` on a fresh connection, one after
    another with ``pause`` seconds between two, until stopped.

    Bounded: every thread stops at ``max_seconds`` or once ``max_requests`` were sent
    in total. Any answer but 200 and any connection error (refused, reset, timeout
    after ``timeout`` seconds) is a failure. Each answer's pid is counted in
    ``served_by`` and its release in ``releases`` (testapp, faulty.py, memhog.py,
    wsgi_hello and the deploy apps name them in their body).
    """

    def __init__(
        self,
        port: int,
        *,
        threads: int = 3,
        pause: float = 0.01,
        max_seconds: float = 60.0,
        max_requests: int = 50_000,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.pause = pause
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        # what the test is doing now: each failure is filed under the step that was
        # running when its request began (failed_steps), for an assertion's message
        self.step = "start"
        self._failed_in: list[str] = []
        self.served_by: Counter[int] = Counter()
        self.releases: Counter[str] = Counter()
        self.latencies: list[float] = []  # seconds, of every request
        self.seconds = 0.0  # how long the load ran, once stopped
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resume = threading.Event()  # cleared: every client parks before its next request
        self._resume.set()
        self._parked = threading.Semaphore(0)
        self._started = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        """Requests answered or failed so far."""
        with self._lock:
            return self.ok + len(self.failures)

    def _run(self) -> None:
        deadline = self._started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._resume.is_set():
                self._parked.release()
                self._resume.wait(60)
            with self._lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
                n = self.sent
            self._one(n)
            self._stop.wait(self.pause)

    def _one(self, n: int) -> None:
        began = time.monotonic()
        step = self.step
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        failure = None
        body = b""
        try:
            conn.request("GET", f"/?n={n}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                failure = f"request {n}: HTTP {resp.status}: {body[:200]!r}"
        except Exception as exc:  # every failure counts, whatever its kind
            failure = f"request {n}: {exc!r}"
        finally:
            conn.close()
        with self._lock:
            self.latencies.append(time.monotonic() - began)
            if failure is not None:
                self.failures.append(failure)
                self._failed_in.append(step)
                return
            self.ok += 1
            self.served_by[pid_in(body)] += 1
            self.releases[_release_in(body)] += 1

    def start(self) -> Load:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def quiet(self, fn: Callable[[], None], timeout: float = 30.0) -> None:
        """Run ``fn`` while every client is parked between two requests: each one's
        last request answered and its connection closed, the next not yet begun (a
        request a process has accepted dies with it under any supervisor)."""
        self._resume.clear()
        try:
            for t in self._threads:
                if t.is_alive():
                    assert self._parked.acquire(timeout=timeout), "a client did not park"
            fn()
        finally:
            self._resume.set()

    def wait_ok(self, more: int, timeout: float = 20.0) -> None:
        """Wait until ``more`` further requests have succeeded."""
        target = self.ok + more
        wait_until(
            lambda: self.ok >= target or not any(t.is_alive() for t in self._threads),
            timeout,
            f"{more} more successful requests (ok={self.ok}, failures={self.failures[:3]})",
        )
        assert self.ok >= target, f"the load ended early: {self.ok} ok, {self.failures[:5]}"

    def failed_steps(self) -> dict[str, list[str]]:
        """The failures by the step they began in (see ``step``)."""
        with self._lock:
            by_step: dict[str, list[str]] = {}
            for step, what in zip(self._failed_in, self.failures, strict=True):
                by_step.setdefault(step, []).append(what)
            return by_step

    def stop(self) -> Load:
        self._stop.set()
        self._resume.set()
        for t in self._threads:
            if t.ident is not None:
                t.join(self.timeout + 10)
        assert not any(t.is_alive() for t in self._threads), "a load thread is stuck"
        self.seconds = time.monotonic() - self._started
        return self

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{self.ok} ok, {self.failed} failed in {self.seconds:.2f}s; releases "
            f"{dict(self.releases)}; latency p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
            + (f"; failures: {self.failures[:10]}" if self.failures else "")
        )

    def report(self, what: str) -> str:
        line = f"{what}: {self.summary()}"
        print(line)
        return line

    def assert_no_failure(self) -> None:
        assert self.ok > 0, "no request succeeded at all"
        assert not self.failures, (
            f"{len(self.failures)} of {self.ok + len(self.failures)} requests failed: "
            f"{self.failures[:5]}"
        )

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
def under_load(
    port: int,
    what: str,
    min_requests: int = 20,
    *,
    threads: int = 3,
    pause: float = 0.005,
    max_seconds: float = 60.0,
) -> Iterator[Load]:
    """Run the block under steady load; then no request may have failed, and at least
    ``2 * min_requests`` succeeded."""
    running = Load(port, threads=threads, pause=pause, max_seconds=max_seconds, timeout=30.0)
    running.start()
    try:
        running.wait_ok(min_requests)  # the load is on before the operation starts
        yield running
        running.wait_ok(min_requests)  # and stays on a little after it
    finally:
        running.stop()
    assert running.failed == 0, f"{what}: {running.summary()}"
    assert running.ok >= 2 * min_requests, f"{what}: too little load: {running.summary()}"


# --------------------------------------------------------------------------- wrk

WRK = shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    failed: int
    summary: str


class Wrk:
    """wrk hammering one URL for the length of a with-block: SIGINT ends it and it prints
    its summary. Bounded by its own ``-d`` should the block never end. Failed requests
    are its socket errors (connect, read, write, timeout) plus non-2xx/3xx answers."""

    def __init__(self, port: int, connections: int = 8, max_seconds: int = 60) -> None:
        assert WRK is not None
        self.argv = [
            WRK, "-t2", f"-c{connections}", f"-d{max_seconds}s", "--timeout", "10s",
            f"http://127.0.0.1:{port}/",
        ]  # fmt: skip
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.result: WrkResult | None = None

    def __enter__(self) -> Wrk:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        pid = self.proc.pid

        def answered() -> bool:
            """wrk has read a few responses (its read bytes, from /proc/PID/io)."""
            try:
                with open(f"/proc/{pid}/io") as f:
                    io = dict(line.split(": ") for line in f.read().splitlines())
            except OSError:
                return False
            return int(io.get("rchar", "0")) > 20_000

        wait_until(answered, 10, "wrk to read its first responses", interval=0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        requests = re.search(r"(\d+) requests in", out)
        errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        assert requests is not None, f"no wrk summary:\n{out}"
        failed = sum(int(n) for n in errors.groups()) if errors else 0
        failed += int(non2xx.group(1)) if non2xx else 0
        self.result = WrkResult(int(requests.group(1)), failed, out)
        print(f"wrk on :{self.port}: {self.result.requests} requests, {failed} failed")
