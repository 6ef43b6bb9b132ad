"""Tests of the read-only HTTP API, served on real sockets and fetched by real clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from supervisord_lite import snapshots
from supervisord_lite.config.values import ListenAddress
from supervisord_lite.httpapi.metrics import CONTENT_TYPE_METRICS, INSTANCE_STATES
from supervisord_lite.httpapi.server import HttpApi, StatusSource

LOOPBACK = ListenAddress("127.0.0.1:0", "127.0.0.1", 0)
# Generous: the tests never rely on timing, these only stop a hung test early.
DEADLINE = 30.0


# -- status factory -------------------------------------------------------------


def instance(
    app: str, name: str, state: str = "RUNNING", **fields: Any
) -> snapshots.InstanceStatus:
    """A plausible running instance; ``fields`` override any attribute."""
    base: dict[str, Any] = {
        "app": app,
        "name": name,
        "state": state,
        "pid": 4242,
        "generation": 3,
        "uptime_s": 12.5,
        "restarts": 2,
        "exit_status": None,
        "ready": True,
        "healthy": True,
        "release": "r42",
        "listen": "127.0.0.1:8000",
        "rss_bytes": 10_485_760,
        "cpu_percent": 1.5,
        "health_failures": 1,
        "cpu_seconds": 7.25,
        "ready_since": 1_700_000_000.5,
        "memory_replacements": 1,
    }
    base.update(fields)
    return snapshots.InstanceStatus(**base)


def app_status(name: str, *insts: snapshots.InstanceStatus, **fields: Any) -> snapshots.AppStatus:
    """An app made of ``insts``."""
    return snapshots.AppStatus(
        name=name,
        state=fields.pop("state", "RUNNING"),
        release=fields.pop("release", "r42"),
        instances={i.name: i for i in insts},
        **fields,
    )


# three fast swaps and one slow one
SWAP_SECONDS = snapshots.Histogram().observe(0.2).observe(0.3).observe(0.5).observe(3.5)
# one good deploy of 2 s and one that failed after 40 s
WEB_DEPLOYS = snapshots.DeployStats().observe(True, 2.0).observe(False, 40.0)


def make_status(*apps: snapshots.AppStatus) -> snapshots.SupervisorStatus:
    """A healthy status with two apps (or ``apps``), one stopped on purpose."""
    if not apps:
        apps = (
            app_status(
                "web",
                instance("web", "0"),
                # Running but never measured yet, and no health check configured.
                instance(
                    "web",
                    "1",
                    pid=4243,
                    uptime_s=None,
                    rss_bytes=None,
                    cpu_percent=None,
                    cpu_seconds=None,
                    ready_since=None,
                    healthy=None,
                    release=None,
                    restarts=0,
                    health_failures=0,
                    memory_replacements=0,
                ),
                deploys=WEB_DEPLOYS,
            ),
            app_status(
                "worker",
                instance(
                    "worker",
                    "main",
                    "STOPPED",
                    pid=None,
                    generation=0,
                    uptime_s=None,
                    exit_status=-15,
                    ready=False,
                    healthy=None,
                    release=None,
                    listen=None,
                    rss_bytes=None,
                    cpu_percent=None,
                    cpu_seconds=None,
                    ready_since=None,
                    health_failures=0,
                    memory_replacements=0,
                ),
                state="STOPPED",
                release=None,
                should_run=False,
            ),
        )
    return snapshots.SupervisorStatus(
        supervisor=snapshots.SupervisorInfo(
            pid=100, version="0.1.0", uptime_s=99.5, state="running", config="/etc/sl.yaml"
        ),
        apps={a.name: a for a in apps},
        counters=snapshots.Counters(swaps_ok=3, swaps_failed=1, swap_seconds=SWAP_SECONDS),
    )


def unhealthy_status() -> snapshots.SupervisorStatus:
    """The default status with web:0 failing its health check and web:1 in BACKOFF."""
    status = make_status()
    web = status.apps["web"]
    insts = {
        "0": dataclasses.replace(web.instances["0"], healthy=False),
        "1": dataclasses.replace(web.instances["1"], state="BACKOFF", pid=None),
    }
    apps = {**status.apps, "web": dataclasses.replace(web, instances=insts)}
    return dataclasses.replace(status, apps=apps)


# -- server and clients -----------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(source: StatusSource, listen: ListenAddress = LOOPBACK) -> AsyncIterator[HttpApi]:
    """Run an HttpApi for the duration of the block, closing it even on failure."""
    api = HttpApi(listen, source)
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _urllib_fetch(url: str, method: str) -> Reply:
    # No proxy: an http_proxy in the environment must not reroute 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method)
    try:
        with opener.open(request, timeout=DEADLINE) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return Reply(resp.status, headers, resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
        finally:
            exc.close()


async def fetch(api: HttpApi, path: str, method: str = "GET") -> Reply:
    """Fetch with urllib in a thread, so the server's loop must answer on its own."""
    url = f"http://{api.bound}{path}"
    return await asyncio.wait_for(asyncio.to_thread(_urllib_fetch, url, method), DEADLINE * 2)


async def curl(*args: str) -> tuple[int, str, str]:
    """Run curl in a thread and wait for it; returns (HTTP status, content type, body)."""
    marker = "\n--curl-meta--\n"
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            "curl",
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            str(DEADLINE),
            "--write-out",
            marker + "%{http_code} %{content_type}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    body, _, meta = proc.stdout.rpartition(marker)
    code, _, content_type = meta.partition(" ")
    return int(code), content_type, body


def parse_metrics(text: str) -> dict[str, Any]:
    """Metric families by name, as prometheus_client's own parser reads them."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """The value of the one sample of ``family`` named ``sample`` with exactly ``labels``."""
    found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (family, sample, labels, families[family].samples)
    return float(found[0])


# -- /status ------------------------------------------------------------------------


def test_status_reports_supervisor_apps_and_instances_with_json_types() -> None:
    """GET /status returns the whole snapshot with the documented fields and JSON types."""

    async def main() -> None:
        async with serving(make_status) as api, aiohttp.ClientSession() as session:
            assert api.bound.startswith("127.0.0.1:") and not api.bound.endswith(":0")
            async with session.get(f"http://{api.bound}/status") as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                data = await resp.json()

        sup = data["supervisor"]
        assert sup == {
            "pid": 100,
            "version": "0.1.0",
            "uptime_s": 99.5,
            "state": "running",
            "config": "/etc/sl.yaml",
        }
        assert set(data["apps"]) == {"web", "worker"}
        web = data["apps"]["web"]
        assert web["state"] == "RUNNING" and web["release"] == "r42"
        assert web["should_run"] is True and web["deploy"] is None and web["last_swap"] is None
        i0 = web["instances"]["0"]
        expected_keys = {
            "state", "pid", "generation", "uptime_s", "restarts", "exit_status", "ready",
            "healthy", "release", "listen", "rss_bytes", "cpu_percent",
        }  # fmt: skip
        assert expected_keys <= set(i0)
        assert isinstance(i0["pid"], int) and isinstance(i0["generation"], int)
        assert isinstance(i0["uptime_s"], float) and isinstance(i0["cpu_percent"], float)
        assert isinstance(i0["rss_bytes"], int) and isinstance(i0["restarts"], int)
        assert i0["ready"] is True and i0["healthy"] is True and i0["state"] == "RUNNING"
        i1 = web["instances"]["1"]
        assert i1["uptime_s"] is None and i1["rss_bytes"] is None and i1["healthy"] is None
        stopped = data["apps"]["worker"]["instances"]["main"]
        assert stopped["state"] == "STOPPED" and stopped["pid"] is None
        assert stopped["exit_status"] == -15 and stopped["ready"] is False

    asyncio.run(main())


def test_status_of_one_app_adds_its_name() -> None:
    """GET /status/APP (fetched with curl) returns that app's JSON plus its name."""

    async def main() -> None:
        async with serving(make_status) as api:
            code, ctype, body = await curl(f"http://{api.bound}/status/web")
        assert code == 200
        assert ctype.startswith("application/json")
        data = json.loads(body)
        assert data["name"] == "web"
        assert data == {"name": "web", **make_status().apps["web"].to_json()}

    asyncio.run(main())


def test_unknown_app_is_404_no_such_app() -> None:
    """GET /status/APP for an unknown app is a 404 JSON error with code no_such_app."""

    async def main() -> None:
        async with serving(make_status) as api:
            reply = await fetch(api, "/status/nope")
        assert reply.status == 404
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json() == {"error": {"code": "no_such_app", "message": "no app named 'nope'"}}

    asyncio.run(main())


def test_unknown_path_is_404_json_not_html() -> None:
    """An unknown path gets a JSON 404, not an HTML page."""

    async def main() -> None:
        async with serving(make_status) as api:
            reply = await fetch(api, "/nowhere")
        assert reply.status == 404
        assert reply.headers["content-type"].startswith("application/json")
        error = reply.json()["error"]
        assert isinstance(error["code"], str) and "/nowhere" in error["message"]

    asyncio.run(main())


def test_post_is_405_json_with_allow_header() -> None:
    """POST on a known path gets a JSON 405 naming the allowed methods."""

    async def main() -> None:
        async with (
            serving(make_status) as api,
            aiohttp.ClientSession() as session,
            session.post(f"http://{api.bound}/status", data=b"x") as resp,
        ):
            assert resp.status == 405
            assert resp.content_type == "application/json"
            assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
            error = (await resp.json())["error"]
        assert isinstance(error["code"], str) and "POST" in error["message"]

    asyncio.run(main())


def test_head_answers_headers_without_a_body() -> None:
    """HEAD on a known path is allowed and returns no body."""

    async def main() -> None:
        async with serving(make_status) as api:
            reply = await fetch(api, "/metrics", method="HEAD")
        assert reply.status == 200 and reply.body == b""
        assert reply.headers["content-type"] == CONTENT_TYPE_METRICS

    asyncio.run(main())


def test_failing_source_is_500_json() -> None:
    """A status source that raises yields a JSON 500 with code internal, not a crash."""

    def broken() -> snapshots.SupervisorStatus:
        raise RuntimeError("boom")

    async def main() -> None:
        async with serving(broken) as api:
            reply = await fetch(api, "/status")
            assert (await fetch(api, "/status")).status == 500  # still serving
        assert reply.status == 500
        assert reply.json()["error"]["code"] == "internal"
        assert "boom" not in reply.body.decode()

    asyncio.run(main())


# -- /healthz -------------------------------------------------------------------------


def test_healthz_is_200_when_everything_that_should_run_is_healthy() -> None:
    """/healthz is 200 when only an app that should not run is stopped."""

    async def main() -> None:
        async with serving(make_status) as api:
            reply = await fetch(api, "/healthz")
        assert reply.status == 200
        assert reply.json() == {"healthy": True}

    asyncio.run(main())


def test_healthz_is_503_and_lists_unhealthy_instances() -> None:
    """/healthz is 503 and names each instance that is not running or failing its check."""

    async def main() -> None:
        async with serving(unhealthy_status) as api:
            reply = await fetch(api, "/healthz")
        assert reply.status == 503
        data = reply.json()
        assert data["healthy"] is False
        unhealthy = data["unhealthy"]
        assert len(unhealthy) == 2
        assert "web:1 BACKOFF" in unhealthy
        assert any(u.startswith("web:0 ") for u in unhealthy)
        assert not any(u.startswith("worker:") for u in unhealthy)

    asyncio.run(main())


# -- /metrics -------------------------------------------------------------------------


EXPECTED_FAMILIES = {
    # family name as prometheus_client reports it (counters lose "_total") -> type
    "supervisord_lite_up": "gauge",
    "supervisord_lite_info": "gauge",
    "supervisord_lite_instance_state": "gauge",
    "supervisord_lite_instance_restarts": "counter",
    "supervisord_lite_instance_resident_memory_bytes": "gauge",
    "supervisord_lite_instance_cpu_seconds": "counter",
    "supervisord_lite_instance_start_time_seconds": "gauge",
    "supervisord_lite_instance_ready": "gauge",
    "supervisord_lite_instance_healthy": "gauge",
    "supervisord_lite_instance_generation": "gauge",
    "supervisord_lite_instance_health_check_failures": "counter",
    "supervisord_lite_instance_memory_replacements": "counter",
    "supervisord_lite_instance_info": "gauge",
    "supervisord_lite_swaps": "counter",
    "supervisord_lite_swap_duration_seconds": "histogram",
    "supervisord_lite_deploys": "counter",
    "supervisord_lite_deploy_duration_seconds": "histogram",
    # the daemon's own (from /proc/self, under prometheus_client ProcessCollector's names)
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
}


def test_metrics_parse_with_help_type_and_expected_samples() -> None:
    """/metrics parses with prometheus_client and carries the expected samples."""

    async def main() -> None:
        async with serving(make_status) as api:
            reply = await fetch(api, "/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"] == CONTENT_TYPE_METRICS
        text = reply.body.decode()
        families = parse_metrics(text)
        for name, mtype in EXPECTED_FAMILIES.items():
            assert families[name].type == mtype, name
            assert families[name].documentation, name
        for exposed in ("up", "instance_restarts_total", "swaps_total", "swap_duration_seconds"):
            assert f"# HELP supervisord_lite_{exposed} " in text
            assert f"# TYPE supervisord_lite_{exposed} " in text
        # Prometheus sets `instance` itself (the target); ours would become exported_instance.
        assert not any("instance" in s.labels for f in families.values() for s in f.samples)

        def value(family: str, sample: str | None = None, **labels: str) -> float:
            name = "supervisord_lite_" + family
            return sample_value(families, name, "supervisord_lite_" + (sample or family), **labels)

        assert value("up") == 1
        assert value("info", version="0.1.0", state="running") == 1
        web0 = {"app": "web", "app_instance": "0"}
        web1 = {"app": "web", "app_instance": "1"}
        worker = {"app": "worker", "app_instance": "main"}
        for state in INSTANCE_STATES:
            assert value("instance_state", **web0, state=state) == (state == "RUNNING")
            assert value("instance_state", **worker, state=state) == (state == "STOPPED")
        assert len(families["supervisord_lite_instance_state"].samples) == 3 * 7
        assert value("instance_restarts", "instance_restarts_total", **web0) == 2
        assert value("instance_resident_memory_bytes", **web0) == 10_485_760
        assert value("instance_cpu_seconds", "instance_cpu_seconds_total", **web0) == 7.25
        assert value("instance_start_time_seconds", **web0) == 1_700_000_000.5
        assert value("instance_ready", **web0) == 1 and value("instance_ready", **worker) == 0
        assert value("instance_healthy", **web0) == 1
        assert value("instance_generation", **web1) == 3
        failures = "instance_health_check_failures"
        assert value(failures, failures + "_total", **web0) == 1
        replaced = "instance_memory_replacements"
        assert value(replaced, replaced + "_total", **web0) == 1
        assert value(replaced, replaced + "_total", **web1) == 0
        assert value("instance_info", **web0, release="r42") == 1
        assert value("instance_info", **web1, release="") == 1
        assert value("swaps", "swaps_total", result="ok") == 3
        assert value("swaps", "swaps_total", result="failed") == 1
        swap = "swap_duration_seconds"
        assert value(swap, swap + "_sum") == 4.5
        assert value(swap, swap + "_count") == 4
        # cumulative buckets: 0.2 | 0.3, 0.5 | 3.5
        assert value(swap, swap + "_bucket", le="0.25") == 1
        assert value(swap, swap + "_bucket", le="0.5") == 3
        assert value(swap, swap + "_bucket", le="2.5") == 3
        assert value(swap, swap + "_bucket", le="5.0") == 4
        assert value(swap, swap + "_bucket", le="+Inf") == 4
        assert value("deploys", "deploys_total", app="web", result="ok") == 1
        assert value("deploys", "deploys_total", app="web", result="failed") == 1
        assert value("deploys", "deploys_total", app="worker", result="ok") == 0
        deploy = "deploy_duration_seconds"
        assert value(deploy, deploy + "_count", app="web") == 2
        assert value(deploy, deploy + "_sum", app="web") == 42.0
        assert value(deploy, deploy + "_bucket", app="web", le="2.5") == 1
        assert value(deploy, deploy + "_bucket", app="web", le="60.0") == 2

        # Unknown values are omitted rather than reported as 0.
        def instances_of(family: str) -> set[str]:
            return {s.labels["app_instance"] for s in families[family].samples}

        assert instances_of("supervisord_lite_instance_resident_memory_bytes") == {"0"}
        assert instances_of("supervisord_lite_instance_cpu_seconds") == {"0"}
        assert instances_of("supervisord_lite_instance_start_time_seconds") == {"0"}
        assert instances_of("supervisord_lite_instance_healthy") == {"0"}

    asyncio.run(main())


def test_metrics_escape_label_values() -> None:
    """A weird app name with backslash, quote and newline survives a parse round trip."""
    weird = 'we"ird\\app\nname'
    status = make_status(app_status(weird, instance(weird, 'i"0', release='rel\\"1\n')))

    async def main() -> None:
        async with serving(lambda: status) as api:
            reply = await fetch(api, "/metrics")
        text = reply.body.decode()
        assert 'app="we\\"ird\\\\app\\nname"' in text
        prefixes = ("#", "supervisord_lite_", "process_")
        assert all(line.startswith(prefixes) for line in text.splitlines())
        families = parse_metrics(text)
        ids = {"app": weird, "app_instance": 'i"0'}
        info = "supervisord_lite_instance_info"
        assert sample_value(families, info, info, **ids, release='rel\\"1\n') == 1
        state = "supervisord_lite_instance_state"
        assert sample_value(families, state, state, **ids, state="RUNNING") == 1

    asyncio.run(main())


# -- listening and load -----------------------------------------------------------------


def test_unix_socket_listen_serves_and_removes_the_socket(tmp_path: Path) -> None:
    """A unix:/path listen address is served (fetched with curl --unix-socket) and cleaned up."""
    path = tmp_path / "http.sock"

    async def main() -> None:
        listen = ListenAddress(f"unix:{path}", path=str(path))
        async with serving(make_status, listen) as api:
            assert api.bound == f"unix:{path}"
            code, ctype, body = await curl("--unix-socket", str(path), "http://localhost/healthz")
            assert (code, json.loads(body)) == (200, {"healthy": True})
            code, ctype, body = await curl("--unix-socket", str(path), "http://localhost/metrics")
            assert code == 200 and ctype == CONTENT_TYPE_METRICS
            assert "supervisord_lite_up 1.0" in body.splitlines()
        assert not os.path.exists(path)

    asyncio.run(main())


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 response with a Content-Length body; returns the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def shrink_server_send_buffer(api: HttpApi, client: tuple[str, int]) -> None:
    """Shrink the server's SO_SNDBUF for the connection from ``client``.

    Linux grows loopback send buffers to megabytes, which would swallow whole
    responses and leave nothing for a slow reader to hold up; with a small fixed
    buffer the server really has to wait for the client.
    """
    for transport in api.connections:
        if transport.get_extra_info("peername") == client:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            return
    raise AssertionError(f"no server connection from {client}")


def test_slow_clients_do_not_stall_a_fresh_request() -> None:
    """A new request is answered while 50 clients stall on big responses and 10 mid-request."""
    # A large status, so each response is far bigger than the socket buffers.
    big = make_status(
        *(
            app_status(f"app-{n}", *(instance(f"app-{n}", str(i)) for i in range(4)))
            for n in range(300)
        )
    )
    assert len(json.dumps(big.to_json())) > 250_000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clients: list[asyncio.StreamWriter] = []

        async def connect(
            host: str, port: int
        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A tiny receive window (set before connecting) keeps the server's
            # data queued on its side instead of in our kernel buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            # limit=1024: the stream stops reading from the socket almost at once.
            reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
            clients.append(writer)
            return reader, writer

        async def slow_reader(api: HttpApi, host: str, port: int) -> None:
            reader, writer = await connect(host, port)
            # One full round trip proves the server has accepted this connection,
            # so its send buffer can be shrunk before the big response is written.
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert json.loads(await read_response(reader)) == {"healthy": True}
            shrink_server_send_buffer(api, writer.get_extra_info("sockname"))
            writer.write(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            # Wait until the server has started answering, then never read again.
            assert await reader.readexactly(5) == b"HTTP/"

        async def half_request(host: str, port: int) -> None:
            _, writer = await connect(host, port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: local")
            await writer.drain()

        async with serving(lambda: big) as api:
            host, _, port_text = api.bound.rpartition(":")
            port = int(port_text)
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(slow_reader(api, host, port) for _ in range(50)),
                        *(half_request(host, port) for _ in range(10)),
                    ),
                    DEADLINE,
                )
                # The premise: 50 responses are stuck in the server, waiting on clients.
                stuck = [t for t in api.connections if t.get_write_buffer_size() > 0]
                assert len(stuck) == 50

                reply = await fetch(api, "/status/app-7")
                assert reply.status == 200
                assert reply.json()["name"] == "app-7"
                health = await fetch(api, "/healthz")
                assert health.status == 200
            finally:
                for writer in clients:
                    writer.close()
                for writer in clients:
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()

    asyncio.run(main())
