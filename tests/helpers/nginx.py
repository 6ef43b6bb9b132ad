"""The one nginx the tests put in front of apps: a real nginx of our own.

Its own prefix, pid file, temp dirs and logs live under ``workdir``; it runs in the
foreground (``daemon off``) as a child of the test, so :meth:`Nginx.stop` ends it by
pid, and then ends, by pid, any of its workers that outlived it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType

import pytest

from helpers import children_of, free_port, pid_alive, wait_until

# The default upstream options (as etc/nginx-upstream.conf): one failure takes a
# server out for a second, so the next request goes to the backup.
PRIMARY_OPTS = " max_fails=1 fail_timeout=1s"
# The upstream's name: nginx sends it as the Host header of every proxied request.
UPSTREAM = "web_app"


def nginx_binary() -> str | None:
    """The nginx on this machine (Debian puts it in /usr/sbin), or None."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def nginx_or_skip() -> str:
    """The nginx binary; the test is skipped (saying why) where nginx is not installed."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (tests/run.sh installs nginx-light)")
    return binary


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Nginx:
    """nginx proxying to an upstream: by default the primary and, as ``backup``, the
    backup (as etc/nginx-upstream.conf does); ``servers`` gives the upstream's
    ``server`` lines instead (address and options). ``tries`` bounds how many servers
    one request may be tried on (``proxy_next_upstream_tries``)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        primary: int = 0,
        backup: int = 0,
        *,
        servers: list[str] | None = None,
        tries: int = 2,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.servers = servers or [
            f"127.0.0.1:{primary}{PRIMARY_OPTS}",
            f"127.0.0.1:{backup} backup",
        ]
        self.tries = tries
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers: list[int] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"

    def config(self) -> str:
        w = self.workdir
        # as root, the workers would run as nobody, who cannot enter a 0700 temp dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {w}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        upstream = "\n".join(f"        server {s};" for s in self.servers)
        return f"""\
{user}worker_processes 1;
pid {w}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    upstream {UPSTREAM} {{
{upstream}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries {self.tries};
            proxy_connect_timeout 1s;
            proxy_read_timeout 20s;
            proxy_send_timeout 20s;
        }}
    }}
}}
"""

    def start(self) -> Nginx:
        self.conf.write_text(self.config())
        with open(self.workdir / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.workdir),
                    "-e",
                    str(self.error_log),
                    "-c",
                    str(self.conf),
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n" + self.log())
            return _port_answers(self.port)

        wait_until(up, 10.0, "nginx to listen")
        self.workers = children_of(self.proc.pid)
        return self

    def log(self) -> str:
        parts = []
        for path in (self.workdir / "nginx.out", self.error_log):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)[-4000:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.workers += children_of(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown; the master stops its workers
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not any(pid_alive(p) for p in self.workers), 5, "nginx workers")
        for pid in self.workers:  # only the workers of the nginx we started, by pid
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
