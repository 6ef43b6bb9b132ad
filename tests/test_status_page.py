"""The status page at ``GET /``: its headers and document, and in a real headless chromium.

The browser tests start Debian's chromium with a DevTools port and drive it over the
Chrome DevTools Protocol (aiohttp's websocket client): open the page, read the DOM
with ``Runtime.evaluate``, change the daemon under it, and read again, never
reloading. They are skipped, saying why, where chromium is not installed
(tests/run.sh installs it). Each test kills the browser's whole process group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil
import pytest
from aiohttp import web
from conftest import DaemonFactory
from helpers import PYTHON, free_port, wait_until, wait_until_async

from supervisord_lite import snapshots
from supervisord_lite.config.values import ListenAddress
from supervisord_lite.httpapi import page as status_page
from supervisord_lite.httpapi.server import HttpApi
from supervisord_lite.instance.state import State

T = TypeVar("T")
DEADLINE = 20.0  # generous; only stops a hung test
START_DEADLINE = 60.0  # chromium's cold start (see Browser.page_websocket)
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium; tests/run.sh does)",
)

# Text an app controls, made to run if the page ever treated it as markup.
PAYLOAD = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


# --------------------------------------------------------------------------- without a browser


async def _get(source: Callable[[], snapshots.SupervisorStatus], method: str = "GET") -> Any:
    api = HttpApi(ListenAddress("127.0.0.1:0", "127.0.0.1", 0), source)
    await api.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"http://{api.bound}/") as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()
    finally:
        await api.close()


def _empty_status() -> snapshots.SupervisorStatus:
    return snapshots.SupervisorStatus(snapshots.SupervisorInfo(1, "0", 1.0, "running", None), {})


def _csp(headers: dict[str, str]) -> dict[str, str]:
    policy = headers["Content-Security-Policy"]
    return {d.split()[0]: d.partition(" ")[2] for d in (p.strip() for p in policy.split(";"))}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_page_is_served_with_a_strict_policy() -> None:
    """GET / is the HTML page; only its own inline script and style may run, and it may
    only talk to its own origin."""
    status, headers, body = asyncio.run(_get(_empty_status))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    html = body.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    csp = _csp(headers)
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert len(scripts) == 1 and len(styles) == 1
    assert csp["script-src"] == _sha256(scripts[0])
    assert csp["style-src"] == _sha256(styles[0])
    # the page is the package's files, the script and style put inline as they are
    static = resources.files("supervisord_lite.httpapi").joinpath("static")
    states = json.dumps([s.value for s in State])  # the page's one generated part
    assert scripts[0] == static.joinpath("status.js").read_text().replace("/*STATES*/", states)
    assert styles[0] == static.joinpath("status.css").read_text()
    assert "unsafe" not in headers["Content-Security-Policy"]
    # No external assets: nothing with a scheme or a protocol-relative URL.
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", html.replace("http://{host}", ""))
    assert not re.search(r"\b(src|href)=", html.replace('href="status"', ""))
    head_status, _, head_body = asyncio.run(_get(_empty_status, "HEAD"))
    assert (head_status, head_body) == (200, b"")
    post_status, _, _ = asyncio.run(_get(_empty_status, "POST"))
    assert post_status == 405  # read-only


def test_page_script_never_writes_markup() -> None:
    """Text reaches the DOM through textContent only: no HTML-string sink in the script."""
    script = status_page.page().body.decode().split("<script>", 1)[1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "textContent" in script


# --------------------------------------------------------------------------- the browser


class Browser:
    """A headless chromium with a DevTools port, in a process group of its own."""

    def __init__(self, root: Path) -> None:
        assert CHROMIUM is not None
        self.port = free_port()
        profile = root / "chromium-profile"
        profile.mkdir(parents=True)
        self.log = root / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-address=127.0.0.1",
                    f"--remote-debugging-port={self.port}",
                    "--window-size=1280,800",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.proc.pid

    def page_websocket(self) -> str:
        """The DevTools websocket of the browser's tab, once the browser answers."""

        def tab() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited:\n" + self.log.read_text(errors="replace"))
            try:
                url = f"http://127.0.0.1:{self.port}/json/list"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    targets = json.load(resp)
            except OSError:
                return None
            pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
            return pages[0] if pages else None

        # its start is a cold start of a whole browser: bounded, with room for a
        # loaded 2-core machine (20 s was seen to be too little there)
        return wait_until(tab, START_DEADLINE, "chromium's DevTools endpoint")

    def close(self) -> None:
        """Kill the browser and every process it started (its process group), and reap."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.proc.wait(DEADLINE)

        def group_gone() -> bool:
            for proc in psutil.process_iter(["pid", "status"]):
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    if proc.info["status"] != psutil.STATUS_ZOMBIE and (
                        os.getpgid(proc.pid) == self.pgid
                    ):
                        return False
            return True

        wait_until(group_gone, DEADLINE, "chromium's processes to be gone")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # one browser for the module: a cold start of chromium (profile, GPU process
    # probing, dbus attempts) is by far the slowest step here, seconds on a busy
    # machine; each test opens a tab of its own
    b = Browser(tmp_path_factory.mktemp("browser"))
    try:
        yield b
    finally:
        b.close()


class Tab:
    """One page, spoken to over the DevTools Protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_id = 0
        self.exceptions: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), DEADLINE)
            if message.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(json.dumps(message["params"]["exceptionDetails"]))
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def text(self) -> str:
        return str(await self.js("document.body.innerText"))

    async def row(self, target: str) -> list[str] | None:
        """The cells of an instance's row, as shown."""
        value = await self.js(
            f"(() => {{ const r = document.querySelector('tr[data-instance={json.dumps(target)}]');"
            " return r ? [...r.cells].map((c) => c.textContent) : null; })()"
        )
        return None if value is None else [str(v) for v in value]

    async def open(self, url: str) -> None:
        # Before any page script runs: record every CSP violation.
        await self.call("Runtime.enable")
        await self.call("Page.enable")
        await self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            source="window.__violations = []; document.addEventListener("
            "'securitypolicyviolation', (e) => window.__violations.push("
            "e.violatedDirective + ' ' + e.blockedURI));",
        )
        await self.call("Page.navigate", url=url)


@contextlib.asynccontextmanager
async def tab_of(browser: Browser) -> AsyncIterator[Tab]:
    url = browser.page_websocket()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, max_msg_size=0) as ws,
    ):
        yield Tab(ws)


async def no_harm_done(tab: Tab) -> None:
    """Nothing injected ran, nothing was blocked, no script error."""
    assert await tab.js("typeof window.__pwned") == "undefined"
    assert await tab.js("document.images.length") == 0
    assert await tab.js("document.scripts.length") == 1  # the page's own
    assert await tab.js("window.__violations") == []
    assert tab.exceptions == []


# --------------------------------------------------------------------------- a real daemon


@needs_chromium
def test_page_shows_a_restart_without_reloading(
    make_daemon: DaemonFactory, browser: Browser
) -> None:
    """The demo's primary and backup are shown; after kill -9 of the primary the page,
    never reloaded, shows the new pid and restart count. An app-controlled error text
    (a failing ready check's output) is shown as text and never runs."""
    evil_check = ["/bin/sh", "-c", f"printf '%s\\n' '{PAYLOAD}'; exit 1"]
    d = make_daemon(
        {
            "hello": {
                "command": [PYTHON, "-m", "supervisord_lite.demo.app"],
                "instances": ["primary", "backup"],
                "listen": f"127.0.0.1:{free_port()}",
                "ready": {"http": "http://{host}:{port}/health", "timeout": 10},
            },
            "evil": {
                "command": [PYTHON, "-c", "import time; time.sleep(600)"],
                "ready": {"exec": evil_check, "timeout": 1.5},
            },
        }
    )
    pids = d.wait_running("hello", "primary", "backup")

    async def scenario() -> dict[str, Any]:
        async with tab_of(browser) as tab:
            await tab.open(f"http://127.0.0.1:{d.http_port}/")

            async def both_shown() -> list[list[str]] | None:
                rows = [await tab.row("hello:primary"), await tab.row("hello:backup")]
                if None in rows:
                    return None
                shown = [(r[1], r[2]) for r in rows if r is not None]
                expected = [("RUNNING", str(pids["primary"])), ("RUNNING", str(pids["backup"]))]
                return [r for r in rows if r is not None] if shown == expected else None

            primary, _ = await wait_until_async(
                both_shown, DEADLINE, "hello:primary and hello:backup shown"
            )
            assert primary[5] == "0"  # restarts
            await tab.js("window.__mark = 'the first document'")

            os.kill(pids["primary"], signal.SIGKILL)

            def replaced() -> dict[str, Any] | None:
                inst = d.instance("hello", "primary", fast=True)
                # (a pid: between the exit and its handling the state still reads
                # RUNNING, with no pid)
                pid = inst["pid"]
                running = inst["state"] == "RUNNING" and pid not in (None, pids["primary"])
                return inst if running else None

            new = d.wait_for(replaced, DEADLINE, "hello:primary to be running again")
            assert new["restarts"] >= 1, new

            async def restart_shown() -> list[str] | None:
                row = await tab.row("hello:primary")
                if row is None:
                    return None
                ok = (row[1], row[2], row[5]) == ("RUNNING", str(new["pid"]), str(new["restarts"]))
                return row if ok else None

            await wait_until_async(restart_shown, DEADLINE, "the new pid and restart count shown")
            assert await tab.js("window.__mark") == "the first document"  # no reload
            seen = str(await tab.js("document.getElementById('seen').innerText"))
            assert re.search(r"hello:primary\s*restart\s*restarts 1, pid", seen), seen

            async def evil_shown() -> str | None:
                text = await tab.text()
                return text if PAYLOAD in text else None

            await wait_until_async(evil_shown, DEADLINE, "evil's last error shown as text")
            await no_harm_done(tab)
            return new

    asyncio.run(scenario())


# --------------------------------------------------------------------------- a fake daemon


def hostile_status() -> dict[str, Any]:
    """A /status in which every string an app could influence is markup."""
    inst = {
        "state": "RUNNING",
        "pid": 41,
        "generation": 1,
        "uptime_s": 75.0,
        "restarts": 2,
        "exit_status": None,
        "ready": True,
        "healthy": False,
        "release": PAYLOAD,
        "listen": None,
        "rss_bytes": 5 << 20,
        "cpu_percent": 1.0,
        "health_failures": 3,
        "last_error": "3 failed health checks: " + PAYLOAD,
        "swapping": False,
    }
    app = {
        "state": "RUNNING",
        "release": PAYLOAD,
        "should_run": True,
        "deploy": {"step": PAYLOAD},
        "last_swap": {
            "app": "web",
            "instance": "primary",
            "ok": False,
            "duration_s": 1.5,
            "reason": PAYLOAD,
            "finished_at": 1_700_000_050.0,
        },
        "instances": {"primary": inst, "x<img src=x onerror=window.__pwned=3>": inst},
    }
    return {
        "supervisor": {"pid": 7, "version": PAYLOAD, "uptime_s": 9.0, "state": "running"},
        "apps": {"web": app},
    }


EVENTS = [
    {
        "time": 1_700_000_000,
        "app": "web",
        "instance": "primary",
        "kind": "crash",
        "message": PAYLOAD,
    },
    {
        "time": "2023-11-14T22:20:00Z",
        "app": "web",
        "instance": None,
        "kind": "deploy",
        "message": "newest",
    },
    {
        "time": 1_700_000_100,
        "app": "web",
        "instance": "backup",
        "kind": PAYLOAD,
        "message": "middle",
    },
]


class FakeDaemon:
    """The page, a hostile /status and an /events that can be switched off (404)."""

    def __init__(self) -> None:
        self.has_events = True
        self.hits = {"status": 0, "events": 0}

    async def page(self, request: web.Request) -> web.Response:
        page = status_page.page()
        return web.Response(body=page.body, headers=page.headers)

    async def status(self, request: web.Request) -> web.Response:
        self.hits["status"] += 1
        return web.json_response(hostile_status())

    async def events(self, request: web.Request) -> web.Response:
        self.hits["events"] += 1
        if not self.has_events:
            return web.json_response({"error": {"code": "protocol"}}, status=404)
        return web.json_response({"events": EVENTS})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.status)
        app.router.add_get("/events", self.events)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            yield f"http://127.0.0.1:{port}/"
        finally:
            await runner.cleanup()


@needs_chromium
def test_hostile_text_and_events_are_shown_as_text(browser: Browser) -> None:
    """Markup in every app-controlled field and in /events is shown literally and never
    runs; /events is listed newest first; a 404 there is asked once, then left alone;
    on a phone-sized screen the table becomes cards that fit the width."""
    fake = FakeDaemon()

    async def scenario() -> None:
        async with fake.serving() as url, tab_of(browser) as tab:
            await tab.open(url)

            async def events_listed() -> list[str] | None:
                items = await tab.js(
                    "[...document.querySelectorAll('#events ol:not(#seen) li')]"
                    ".map((li) => li.lastChild.textContent)"
                )
                return items if items else None

            assert await wait_until_async(events_listed, DEADLINE, "the daemon's events") == [
                "newest",
                "middle",
                PAYLOAD,
            ]
            text = await tab.text()
            assert text.count(PAYLOAD) >= 6, text  # version, releases, errors, deploy, swap, event
            assert "x<img src=x onerror=window.__pwned=3>" in text
            await no_harm_done(tab)

            # A phone: cards, and nothing wider than the screen.
            await tab.call(
                "Emulation.setDeviceMetricsOverride",
                width=390,
                height=844,
                deviceScaleFactor=2,
                mobile=True,
            )

            async def cards() -> bool:
                return bool(
                    await tab.js(
                        "getComputedStyle(document.querySelector('thead')).display === 'none'"
                        " && document.documentElement.scrollWidth <= 390"
                    )
                )

            await wait_until_async(cards, DEADLINE, "the phone layout")

            # Without /events: one probe, then only /status. The old page goes first
            # (to a blank one), so what it still asked cannot count for the new one.
            fake.has_events = False
            await tab.call("Page.navigate", url="about:blank")

            async def blank() -> bool:
                return bool(await tab.js("location.href === 'about:blank'"))

            await wait_until_async(blank, DEADLINE, "the old page to be gone")
            before = dict(fake.hits)
            await tab.call("Page.navigate", url=url)

            async def refreshed_a_few_times() -> bool:
                return fake.hits["status"] >= before["status"] + 4

            await wait_until_async(refreshed_a_few_times, DEADLINE, "four refreshes")
            assert fake.hits["events"] == before["events"] + 1
            assert await tab.js("document.querySelectorAll('#events ol').length") == 1
            await no_harm_done(tab)

    asyncio.run(scenario())
