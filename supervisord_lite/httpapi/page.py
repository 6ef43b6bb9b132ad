"""The status page served at ``GET /`` of the HTTP API: one self-contained HTML document.

The page is three files of package data in ``static/``: ``index.html``, its
stylesheet ``status.css`` and its script ``status.js``, read once with
:mod:`importlib.resources`. The stylesheet and the script are put inline into the
document (at ``{{style}}`` and ``{{script}}``) and allowed by their SHA-256 hashes,
computed from the files here, in the Content-Security-Policy; :mod:`server` only
routes ``/`` to :func:`page`. The page is static: its script fetches the JSON
``status`` (relative, so the page also works behind a path prefix) every second and
redraws in place, so no page reload, no templating on the server and no
app-controlled text in the document the server sends.

Everything an app controls (its output in ``last_error``, notify ``STATUS=``
reasons, release names, the events of ``/events``) is put into the page with
``textContent`` only, never as markup. The Content-Security-Policy makes that a
rule the browser enforces rather than a habit: only the page's own inline script
and style run (by SHA-256 hash), nothing loads from anywhere, requests go only to
the page's own origin, and Trusted Types make every HTML-string sink
(``innerHTML`` and friends) throw in browsers that support them.

Recent events: the page shows what it can derive itself (each app's last swap, an
instance's last error, and changes it sees between two refreshes: restarts, new
pids, state and health changes), and, when the daemon has a JSON ``events``
endpoint (``{"events": [{time, app, instance, kind, message}]}``, probed at run
time; a 404 means there is none), its events newest first.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from ..instance.state import State

__all__ = ["Page", "page"]

_STATIC = "static"
_STYLE = "{{style}}"
_SCRIPT = "{{script}}"
_STATES = "/*STATES*/"


@dataclass(frozen=True)
class Page:
    """The document (UTF-8) and the response headers it needs."""

    body: bytes
    headers: dict[str, str]


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(_STATIC, name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def page() -> Page:
    """The page, assembled from the package's files on first use (the daemon asks at
    start, so a broken install fails there, not on the first visit)."""
    html, css, js = _read("index.html"), _read("status.css"), _read("status.js")
    # the state names, from the one State enum (the page does not repeat them)
    js = js.replace(_STATES, json.dumps([s.value for s in State]))
    # each slot exactly once, and nothing in the inlined texts that would end its
    # element early or be taken for the other slot
    if html.count(_STYLE) != 1 or html.count(_SCRIPT) != 1:
        raise RuntimeError(f"static/index.html must hold {_STYLE} and {_SCRIPT} once each")
    if "</style" in css.lower() or _SCRIPT in css or "</script" in js.lower():
        raise RuntimeError("static/status.css or status.js would end its element early")
    body = html.replace(_STYLE, css).replace(_SCRIPT, js).encode()
    policy = (
        "default-src 'none'",
        f"script-src {_sha256(js)}",
        f"style-src {_sha256(css)}",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": "; ".join(policy),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return Page(body, headers)
