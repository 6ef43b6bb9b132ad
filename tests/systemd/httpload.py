"""Steady HTTP load for verify.sh: a bounded loop of GETs, one new connection each.

    httpload.py --out RESULT.json --stop STOPFILE [--rate 200] [--max-seconds 120]
                [--timeout 2] URL...

Sends ``--rate`` requests a second, round-robin over the URLs, each on its own TCP
connection (so every request also goes through the listening socket's accept
queue), until STOPFILE exists or ``--max-seconds`` have passed. A request counts
as ok when it gets a 200 with a JSON body; anything else (refused, reset, timeout,
another status) is a failure. At the end it writes RESULT.json:
``{"ok", "failed", "seconds", "errors": [first 10], "pids": {url: [pids that
answered]}}`` and prints the same as one line. Exit status 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from urllib.parse import urlsplit


def get(url: str, timeout: float) -> int:
    """One GET on a fresh connection; the pid in the app's JSON answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        return int(json.loads(body)["pid"])
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("urls", nargs="+")
    args = p.parse_args(argv)

    ok = failed = 0
    errors: list[str] = []
    pids: dict[str, list[int]] = {u: [] for u in args.urls}
    start = time.monotonic()
    interval = 1.0 / args.rate
    due = start
    n = 0
    while not os.path.exists(args.stop) and time.monotonic() - start < args.max_seconds:
        url = args.urls[n % len(args.urls)]
        n += 1
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        # steady: after a slow request, carry on at the rate instead of bursting
        due = max(due, now - 0.1) + interval
        try:
            pid = get(url, args.timeout)
        except (OSError, ValueError, KeyError, RuntimeError, http.client.HTTPException) as exc:
            failed += 1
            if len(errors) < 10:
                t = time.monotonic() - start
                errors.append(f"{t:.3f}s {url}: {type(exc).__name__}: {exc}")
            continue
        ok += 1
        if pid not in pids[url]:
            pids[url].append(pid)
    result = {
        "ok": ok,
        "failed": failed,
        "seconds": round(time.monotonic() - start, 2),
        "errors": errors,
        "pids": pids,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    print(json.dumps(result))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
