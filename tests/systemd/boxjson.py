"""Helpers of verify.sh that read JSON (bash cannot).

boxjson.py instances    < `supctl --json status`   -> "app:instance STATE PID" lines
boxjson.py stop-order   < the daemon's JSON journal -> exit 0 when every
                          web instance was STOPPED before cache began STOPPING
                          (dependents first: web depends_on cache)
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _json_lines() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                out.append(msg)
    return out


def instances() -> int:
    for msg in _json_lines():
        if "result" not in msg:
            continue
        for app, a in sorted(msg["result"]["apps"].items()):
            for name, i in sorted(a["instances"].items()):
                print(f"{app}:{name} {i['state']} {i['pid']}")
    return 0


def stop_order() -> int:
    events = [m for m in _json_lines() if m.get("event") == "instance_state"]
    web_stopped = [
        n
        for n, m in enumerate(events)
        if str(m.get("instance", "")).startswith("web:") and m.get("state") == "STOPPED"
    ]
    cache_stopping = [
        n
        for n, m in enumerate(events)
        if m.get("instance") == "cache:primary" and m.get("state") == "STOPPING"
    ]
    order = " -> ".join(
        f"{m['instance']} {m['state']}" for m in events if m.get("state") in ("STOPPING", "STOPPED")
    )
    print(order)
    if len(web_stopped) < 2 or not cache_stopping:
        return 1
    return 0 if max(web_stopped) < min(cache_stopping) else 1


if __name__ == "__main__":
    commands = {"instances": instances, "stop-order": stop_order}
    sys.exit(commands[sys.argv[1]]())
