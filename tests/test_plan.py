"""`supctl plan` / `update --dry-run`: plan.diff (pure), and a real daemon that shows a
plan, changes nothing, and then applies exactly that plan on `update`."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import RunningDaemon, free_port
from helpers.edits import edit, generations, pids, port_of, refused, three_apps

from supervisord_lite.config.parser import parse_config
from supervisord_lite.config.settings import Config
from supervisord_lite.supervisor.plan import Action, Plan, diff

SECRET = "hunter2-not-to-be-shown"


def config(apps: dict[str, dict[str, Any]], supervisor: dict[str, Any] | None = None) -> Config:
    text = json.dumps({"supervisor": supervisor or {"http": None}, "apps": apps})
    return parse_config(text)


def sleeper(**extra: Any) -> dict[str, Any]:
    return {"command": ["sleep", "60"], **extra}


def web(
    port: int, instances: tuple[str, ...] = ("primary", "backup"), **extra: Any
) -> dict[str, Any]:
    return {**sleeper(), "instances": list(instances), "listen": f"127.0.0.1:{port}", **extra}


BASE = {
    "keep": sleeper(),
    "change": web(8001, env={"COLOUR": "red", "TOKEN": SECRET}),
    "gone": web(8002),
    "move": web(8003),
}


def edited() -> dict[str, dict[str, Any]]:
    apps: dict[str, dict[str, Any]] = json.loads(json.dumps(BASE))
    del apps["gone"]
    apps["new"] = web(8004, ("primary",))
    apps["change"]["env"]["COLOUR"] = "blue"
    apps["change"]["env"]["TOKEN"] = SECRET + "-rotated"
    apps["change"]["stop"] = {"timeout": 7}
    apps["move"]["instances"] = ["a", "b", "c"]  # a new set of instances: restart
    return apps


# --------------------------------------------------------------------------- pure


def test_identical_configs_have_nothing_to_do() -> None:
    plan = diff(config(BASE), config(BASE))
    assert not plan.changes and plan.refusal is None
    assert plan.unchanged == ["keep", "change", "gone", "move"]
    assert plan.bind == plan.close == plan.moved == ()
    assert plan.lines() == ["nothing to do: the running config is the file's"]
    data = plan.to_json()
    assert data["changes"] is False and data["capacity"] == []


def test_every_kind_of_change() -> None:
    """Added, removed, hot-swapped (with its changed keys), restarted; sockets bound,
    closed and kept open across the restart; capacity for what dips."""
    plan = diff(config(BASE), config(edited()))
    assert plan.added == ["new"]
    assert plan.removed == ["gone"]
    assert plan.swapped == ["change"]
    assert plan.restarted == ["move"]
    assert plan.unchanged == ["keep"]
    change = plan.app("change")
    assert change.keys == ("env.COLOUR", "env.TOKEN", "stop.timeout")
    assert change.instances == ("backup", "primary")  # backup first
    assert "2 of 2 instances keep serving" in (change.capacity or "")
    assert plan.app("move").keys == ("instances", "listen")
    assert plan.app("move").instances == ("a", "b", "c")
    assert plan.bind == ("127.0.0.1:8004",)
    assert plan.close == ("127.0.0.1:8002",)
    assert plan.moved == ("127.0.0.1:8003",)
    capacity = plan.to_json()["capacity"]
    assert any(c.startswith("gone: 0 of 2 instances serving") for c in capacity), capacity
    assert any("127.0.0.1:8003 stays bound" in c for c in capacity), capacity
    assert plan.refusal is None and plan.changes


def test_values_never_appear_in_the_plan() -> None:
    plan = diff(config(BASE), config(edited()))
    assert SECRET not in json.dumps(plan.to_json())
    assert "blue" not in json.dumps(plan.to_json())


def test_json_shape_is_the_documented_one() -> None:
    """The keys docs/contract.md documents for `supctl --json plan` (a stable interface)."""
    data = diff(config(BASE), config(edited())).to_json()
    assert set(data) == {
        "changes",
        "refused",
        "added",
        "removed",
        "swapped",
        "restarted",
        "unchanged",
        "apps",
        "sockets",
        "capacity",
        "supervisor_keys",
        "text",
    }
    assert set(data["sockets"]) == {"bind", "close", "moved"}
    assert data["apps"]["change"] == {
        "action": "swap",
        "keys": ["env.COLOUR", "env.TOKEN", "stop.timeout"],
        "instances": ["backup", "primary"],
        "capacity": data["apps"]["change"]["capacity"],
        "starts": False,
        "method": "hot-swap",
    }
    assert data["apps"]["new"]["starts"] is True
    assert json.loads(json.dumps(data)) == data


def test_an_address_that_moves_to_another_app_is_kept_open() -> None:
    """Removing app A and adding app B on A's address hands the socket over."""
    new = {k: v for k, v in BASE.items() if k != "gone"}
    new["successor"] = web(8002)
    plan = diff(config(BASE), config(new))
    assert (plan.removed, plan.added) == (["gone"], ["successor"])
    assert plan.moved == ("127.0.0.1:8002",) and plan.bind == plan.close == ()
    assert "127.0.0.1:8002 stays bound" in (plan.app("gone").capacity or "")


def test_an_app_without_autostart_is_configured_not_started() -> None:
    new = dict(BASE, idle=sleeper(autostart=False))
    plan = diff(config(BASE), config(new))
    assert not plan.app("idle").starts
    assert "idle: add (configure (autostart: false) primary)" in plan.lines()


def test_socket_activation_false_binds_nothing() -> None:
    new = dict(BASE, new=web(8005, socket_activation=False))
    plan = diff(config(BASE), config(new))
    assert plan.added == ["new"] and plan.bind == ()


def test_changed_env_file_contents_swap_the_app() -> None:
    plan = diff(config(BASE), config(BASE), frozenset({"keep"}))
    assert plan.swapped == ["keep"] and plan.app("keep").keys == ("env_file (contents)",)


@pytest.mark.parametrize(
    "new",
    [
        {"supervisor": {"http": None}},  # no apps: key
        {},  # a 0-byte file
        {"supervisor": {"http": None}, "apps": {}},
        {"supervisor": {"http": None}, "apps": {"other": {"command": ["sleep", "1"]}}},
    ],
)
def test_stopping_every_app_is_refused(new: dict[str, Any]) -> None:
    old = config(BASE)
    text = json.dumps(new) if new else ""
    plan = diff(old, parse_config(text))
    assert plan.refusal is not None and "keep" in plan.refusal
    assert plan.lines()[-1].startswith("refused without --allow-empty: ")


def test_no_refusal_when_some_app_stays_or_nothing_ran() -> None:
    assert diff(config(BASE), config({"keep": sleeper()})).refusal is None
    assert diff(config({}), config({})).refusal is None
    assert diff(config({}), config(BASE)).refusal is None


def test_supervisor_changes_are_noted_not_applied() -> None:
    plan = diff(config(BASE), config(BASE, {"http": None, "shutdown_timeout": 5}))
    assert plan.supervisor_keys == ("shutdown_timeout",) and not plan.changes
    assert "shutdown_timeout changed; takes effect at the next daemon start" in plan.lines()[-1]


def test_plan_is_frozen() -> None:
    plan = diff(config(BASE), config(edited()))
    assert isinstance(plan, Plan)
    with pytest.raises(AttributeError):
        plan.refusal = "x"  # type: ignore[misc]
    assert {a.action for a in plan.apps} == set(Action)


# --------------------------------------------------------------------------- e2e


def plan_of(d: RunningDaemon, *args: str) -> tuple[int, dict[str, Any]]:
    cp = d.supctl(*args, json_output=True)
    final = json.loads(cp.stdout.splitlines()[-1])
    assert final["ok"], (cp.returncode, cp.stdout, cp.stderr)
    result: dict[str, Any] = final["result"]
    return cp.returncode, result


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dry_run_changes_nothing_then_update_does_the_plan(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    d = make_daemon(three_apps(tmp_path))
    before, gens = pids(d), generations(d)
    gone_port = port_of(d.config["apps"]["gone"])
    assert d.supctl("plan").returncode == 0
    new_port = free_port()
    edit(d, new_port)

    cp = d.supctl("plan")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "change: hot-swap backup, primary in turn; changed: env.COLOUR" in cp.stdout
    assert "gone: remove (stop primary)" in cp.stdout
    assert "new: add (start primary)" in cp.stdout
    assert f"sockets: bind 127.0.0.1:{new_port}" in cp.stdout
    assert f"sockets: close 127.0.0.1:{gone_port}" in cp.stdout
    assert "capacity: change: 2 of 2 instances keep serving" in cp.stdout
    code, plan = plan_of(d, "update", "--dry-run")
    assert code == 1
    assert (plan["added"], plan["removed"], plan["swapped"]) == (["new"], ["gone"], ["change"])
    assert plan["unchanged"] == ["keep"] and plan["restarted"] == []
    # nothing changed: same processes, the old socket serves, the new one is not bound
    assert pids(d) == before and generations(d) == gens
    assert answers(gone_port) and refused(new_port)

    code, result = plan_of(d, "update")
    assert code == 0
    for key in ("added", "removed", "swapped", "restarted", "unchanged"):
        assert result[key] == plan[key], key
    code, after = plan_of(d, "plan")
    assert (
        code == 0
        and after["changes"] is False
        and after["unchanged"]
        == [
            "keep",
            "change",
            "new",
        ]
    )


def test_plan_of_an_invalid_or_empty_config(make_daemon: DaemonFactory) -> None:
    """Invalid: exit 2 with file:line. Empty: refused (exit 2) unless --allow-empty (1)."""
    d = make_daemon({"keep": sleeper(ready={"delay": 0})})
    d.wait_running("keep")
    d.config["apps"]["keep"]["bogus"] = 1
    d.write_config()
    cp = d.supctl("plan")
    assert cp.returncode == 2 and f"{d.config_path}:" in cp.stderr and "bogus" in cp.stderr
    d.config_path.write_text("")
    cp = d.supctl("plan")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "refused without --allow-empty: the new config has no apps" in cp.stdout
    code, plan = plan_of(d, "plan", "--allow-empty")
    assert code == 1 and plan["removed"] == ["keep"] and plan["refused"] is None
    assert d.wait_running("keep")  # still running: a plan changes nothing


def test_an_app_that_cannot_run_twice_is_restarted_one_instance_at_a_time() -> None:
    """socket_activation: false (or reload: restart): the plan says stop-then-start, and
    that one instance fewer serves meanwhile, not that both keep serving."""
    before = dict(BASE, own=web(8006, socket_activation=False, env={"V": "1"}))
    after = dict(BASE, own=web(8006, socket_activation=False, env={"V": "2"}))
    plan = diff(config(before), config(after))
    own = plan.app("own")
    assert own.action is Action.SWAP and own.method == "restart (stop-then-start)"
    assert "own: restart (stop-then-start) backup, primary in turn; changed: env.V" in plan.lines()
    assert "1 of 2 instances serving while each is restarted" in (own.capacity or "")
    assert own.to_json()["method"] == "restart (stop-then-start)"
    swapped = diff(config(BASE), config(edited())).app("change")
    assert swapped.method == "hot-swap" and "keep serving" in (swapped.capacity or "")
