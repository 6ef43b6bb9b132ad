"""Three apps and the edit of their config that the `supctl update` and `supctl plan`
tests apply: one app left alone, one changed, one removed, one added.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from helpers import RunningDaemon, app_cmd, free_port

INSTANCES = ("primary", "backup")


def web_app(port: int, instances: tuple[str, ...] = ("primary",), **env: object) -> dict[str, Any]:
    """testapp on one socket shared by its instances, ready by an attributed HTTP check."""
    return {
        **app_cmd(**env),
        "instances": list(instances),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 5},
        "stop": {"timeout": 5},
        "backoff": {"initial": 0.2, "max": 1},
    }


def three_apps(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """keep (left alone), change (its env is edited) and gone (removed from the file)."""
    report = str(tmp_path / "env-{instance}-{generation}.json")
    return {
        "keep": web_app(free_port()),
        "change": web_app(free_port(), INSTANCES, COLOUR="red", ENV_FILE=report),
        "gone": web_app(free_port()),
    }


def pids(d: RunningDaemon) -> dict[str, dict[str, int]]:
    """{app: {instance: pid}} of every instance, once all are RUNNING."""
    status = d.http_status()["apps"]
    return {
        app: {name: d.wait_state(app, name, "RUNNING", 10)["pid"] for name in info["instances"]}
        for app, info in status.items()
    }


def generations(d: RunningDaemon) -> dict[str, dict[str, int]]:
    return {
        app: {n: i["generation"] for n, i in info["instances"].items()}
        for app, info in d.http_status()["apps"].items()
    }


def edit(d: RunningDaemon, port: int) -> None:
    """Remove `gone`, add `new`, change `change`'s env: the three kinds of difference."""
    apps = d.config["apps"]
    del apps["gone"]
    apps["new"] = web_app(port)
    apps["change"]["env"]["COLOUR"] = "blue"
    d.write_config()


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def port_of(app: dict[str, Any]) -> int:
    return int(app["listen"].rsplit(":", 1)[1])
