"""The status page served at ``GET /`` of the HTTP API: one self-contained HTML document.

Owns the page (its HTML; the CSS and JavaScript it inlines are the constants of
:mod:`.status_page_assets`) and the response headers it needs; :mod:`http_api` only
routes ``/`` here. The page is static: its script fetches the
JSON ``status`` (relative, so the page also works behind a path prefix) every
second and redraws in place, so no page reload, no templating on the server and no
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
import hashlib
from typing import Final

from .status_page_assets import CSS as _CSS
from .status_page_assets import JS as _JS

__all__ = ["HEADERS", "PAGE"]


_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>supervisord-lite</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>supervisord-lite</h1>
<span id="daemon" class="dim"></span>
<span id="conn">loading\u2026</span>
</header>
<p id="summary"></p>
<main id="apps"><noscript>This page needs JavaScript; the same data is at
<a href="status">/status</a>.</noscript></main>
<section id="events"></section>
<script>{js}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: The page, UTF-8 encoded.
PAGE: Final = _HTML.format(css=_CSS, js=_JS).encode()

#: The response headers of the page: a strict CSP that allows only its own inline
#: script and style, and requests to its own origin.
HEADERS: Final = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(_JS)}",
            f"style-src {_sha256(_CSS)}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
