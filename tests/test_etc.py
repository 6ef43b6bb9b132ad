"""The files an operator installs: etc/ examples and the systemd unit.

- etc/supervisord-lite.yaml passes ``supervisord-lite --check`` and has the layout
  the other files assume (web primary+backup behind nginx, logs.dir);
- etc/clojure-jetty.yaml (a JVM app in both layouts) passes ``--check``;
- etc/nginx-upstream.conf points at those ports and ``nginx -t`` accepts it
  (when nginx is installed);
- etc/logrotate.conf rotates that logs.dir and signals only the daemon, and
  ``logrotate --debug`` parses it (when logrotate is installed);
- systemd/supervisord-lite.service has the settings the daemon relies on;
- tests/systemd/verify.sh checks the unit under a real systemd (the run's
  systemd-box: it needs root, and is skipped saying so without); its HTTP load
  generator (tests/systemd/httpload.py) is checked here against a local server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from supervisord_lite.config.parser import load_config
from supervisord_lite.config.settings import Config
from supervisord_lite.config.values import parse_size

REPO = Path(__file__).resolve().parents[1]
ETC = REPO / "etc"
EXAMPLE = ETC / "supervisord-lite.yaml"
NGINX_SNIPPET = ETC / "nginx-upstream.conf"
LOGROTATE = ETC / "logrotate.conf"
JVM_EXAMPLE = ETC / "clojure-jetty.yaml"
UNIT = REPO / "systemd" / "supervisord-lite.service"
VERIFY = REPO / "tests" / "systemd" / "verify.sh"
BOX_CONFIG = REPO / "tests" / "systemd" / "box.yaml"
HTTPLOAD = REPO / "tests" / "systemd" / "httpload.py"


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "supervisord_lite.cli", "-c", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (all sections), comments and blanks dropped."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span as used here: 75, 75s, 2min, 1min 30s."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|h)?", value):
        total += float(number) * {"": 1, "s": 1, "ms": 0.001, "min": 60, "h": 3600}[unit]
    return total


@pytest.fixture(scope="module")
def example() -> Config:
    return load_config(EXAMPLE)


# ----------------------------------------------------------------- the example config


def test_example_config_passes_check() -> None:
    result = run_check(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "OK (3 apps)" in result.stdout


def test_jvm_example_passes_check_with_both_layouts() -> None:
    """etc/clojure-jetty.yaml: the kept socket on stdin (hot swap) and the classic own
    port (restart: stop-then-start)."""
    result = run_check(JVM_EXAMPLE)
    assert result.returncode == 0, result.stderr
    apps = load_config(str(JVM_EXAMPLE)).apps
    assert apps["shop"].socket_on_stdin and apps["shop"].reload.is_swap
    assert apps["shop-classic"].socket_activation is False and apps["shop-classic"].reload.restart


def test_box_config_passes_check() -> None:
    result = run_check(BOX_CONFIG)
    assert result.returncode == 0, result.stderr


def test_example_config_has_the_documented_layout(example: Config) -> None:
    web = example.apps["web"]
    assert web.instances == ("primary", "backup")
    assert not web.listen_shared
    assert {name: a.address for name, a in web.listen.items()} == {
        "primary": "127.0.0.1:8001",
        "backup": "127.0.0.1:8002",
    }
    assert web.ready.http and web.health is not None and web.health.http
    assert web.depends_on == ("queue",)
    assert example.apps["worker"].listen == {}
    assert example.apps["worker"].ready.delay is not None
    assert example.start_order().index("queue") < example.start_order().index("web")
    for app in example.apps.values():
        assert app.logs.dir == "/var/log/supervisord-lite"
        # --check must pass on any host: no user/group that may not exist here
        assert app.user is None and app.group is None
        # every stop fits in the daemon's shutdown budget
        assert app.stop.timeout < example.supervisor.shutdown_timeout


# ----------------------------------------------------------------- nginx


def test_nginx_snippet_targets_the_web_ports(example: Config) -> None:
    text = NGINX_SNIPPET.read_text()
    web = example.apps["web"]
    assert re.search(
        rf"server\s+{re.escape(web.listen['primary'].address)}\s[^;]*fail_timeout", text
    )
    assert re.search(rf"server\s+{re.escape(web.listen['backup'].address)}\s+backup\s*;", text)
    next_upstream = re.search(r"^\s*proxy_next_upstream\s+([^;]*);", text, re.M)
    assert next_upstream is not None
    assert {"error", "timeout", "http_502"} <= set(next_upstream.group(1).split())


@pytest.mark.nginx
def test_nginx_accepts_the_snippet(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed")
    temp = tmp_path / "temp"
    temp.mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"    access_log off;\n"
        f"    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n"
        f"    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"    include {NGINX_SNIPPET};\n"
        "}\n"
    )
    args = [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)]
    help_text = subprocess.run([nginx, "-h"], capture_output=True, text=True, timeout=30).stderr
    if re.search(r"^\s*-e ", help_text, re.M):  # nginx >= 1.19.5: early error log
        args[1:1] = ["-e", str(tmp_path / "error.log")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# ----------------------------------------------------------------- logrotate


def test_logrotate_rotates_the_logs_dir_and_signals_only_the_daemon(example: Config) -> None:
    text = LOGROTATE.read_text()
    logs_dir = example.apps["web"].logs.dir
    assert re.search(rf"^{re.escape(str(logs_dir))}/\*\.log\s*\{{", text, re.M)
    postrotate = text[text.index("postrotate") : text.index("endscript")]
    # `systemctl kill` without --kill-whom=main would send USR1 to every app too
    assert "--kill-whom=main" in postrotate and "USR1" in postrotate
    assert "/run/supervisord-lite/supervisord-lite.pid" in postrotate
    # logrotate's own rotation must come before the built-in one
    maxsize = re.search(r"^\s*maxsize\s+(\S+)", text, re.M)
    assert maxsize is not None
    for app in example.apps.values():
        assert app.logs.max_bytes > parse_size(maxsize.group(1) + "iB")


def test_logrotate_parses_the_config(tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None
    )
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    result = subprocess.run(
        [logrotate, "--debug", "--state", str(tmp_path / "state"), str(LOGROTATE)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr


# ----------------------------------------------------------------- the systemd unit


def test_unit_has_what_the_daemon_relies_on(example: Config) -> None:
    s = unit_settings(UNIT)

    def one(key: str) -> str:
        assert len(s.get(key, [])) == 1, f"{key}: {s.get(key)}"
        return s[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    # systemd signals only the daemon: it stops the apps itself on `systemctl stop`,
    # and when it dies the apps keep serving until the restarted daemon adopts them
    assert one("KillMode") == "process"
    assert one("Restart") == "on-failure"
    # ... with their listening sockets and output pipes back from systemd's fd store
    # (FDSTORE=1 from the main process: NotifyAccess=main suffices)
    assert int(one("FileDescriptorStoreMax")) >= 1024
    assert seconds(one("WatchdogSec")) == 30
    config = "/etc/supervisord-lite/supervisord-lite.yaml"
    assert one("ExecStart") == f"/usr/local/bin/supervisord-lite -c {config}"
    assert one("ExecStartPre") == f"/usr/local/bin/supervisord-lite -c {config} --check"
    assert one("ExecReload") == "/usr/local/bin/supctl update"
    # systemd creates the state_dir the config uses (root's default one)
    assert example.supervisor.state_dir == "/run/" + one("RuntimeDirectory")
    assert one("RuntimeDirectoryPreserve") == "yes"
    # a bit longer than the daemon's own shutdown budget, so it can finish it
    stop = seconds(one("TimeoutStopSec"))
    assert example.supervisor.shutdown_timeout < stop <= example.supervisor.shutdown_timeout + 30
    # long enough for boot apps to become ready (the default ready.timeout is 60 s)
    ready_chain = max(
        sum(example.apps[a].ready.timeout for a in (*example.apps[name].depends_on, name))
        for name in example.apps
    )
    assert seconds(one("TimeoutStartSec")) >= ready_chain
    assert int(one("LimitNOFILE")) >= 65536


def test_systemd_drop_in_overrides_every_command() -> None:
    s = unit_settings(REPO / "tests" / "systemd" / "10-venv.conf")
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        assert s[key][0] == "", f"{key}= must be reset before it is set again"
        assert s[key][1].startswith("@VENV@/bin/")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_unit_under_real_systemd(systemd_box: None) -> None:
    """tests/systemd/verify.sh in the run's systemd-box (root; its first boot downloads
    a minimal Debian, about a minute)."""
    result = subprocess.run(["bash", str(VERIFY)], capture_output=True, text=True, timeout=850)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL:" not in result.stdout


# ----------------------------------------------------------------- verify.sh's HTTP load


class _PidHandler(BaseHTTPRequestHandler):
    """Answers like tests/apps/testapp.py: 200 and a JSON body with a pid."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"pid": 4242}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pid_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PidHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_load(tmp_path: Path, *urls: str, seconds: float = 0.5) -> tuple[int, dict[str, Any]]:
    """httpload.py at 100 requests/s for ``seconds``: its exit status and its result."""
    out = tmp_path / "load.json"
    args = ["--out", str(out), "--stop", str(tmp_path / "stop"), "--rate", "100"]
    args += ["--max-seconds", str(seconds), "--timeout", "1", *urls]
    result = subprocess.run(
        [sys.executable, str(HTTPLOAD), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, json.loads(out.read_text())


def test_httpload_counts_answers(tmp_path: Path, pid_server: str) -> None:
    rc, result = run_load(tmp_path, pid_server)
    assert rc == 0, result
    assert result["failed"] == 0 and result["errors"] == []
    assert 20 <= result["ok"] <= 60  # about --rate x --max-seconds: paced, and bounded
    assert result["pids"] == {pid_server: [4242]}


def test_httpload_counts_failures(tmp_path: Path, pid_server: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    rc, result = run_load(tmp_path, pid_server, closed)
    assert rc == 1
    assert result["ok"] > 0 and result["failed"] > 0
    assert "ConnectionRefusedError" in result["errors"][0]


def test_httpload_stops_on_the_stop_file(tmp_path: Path, pid_server: str) -> None:
    (tmp_path / "stop").touch()
    rc, result = run_load(tmp_path, pid_server, seconds=30)
    assert rc == 0 and result["ok"] == 0 and result["seconds"] < 5
