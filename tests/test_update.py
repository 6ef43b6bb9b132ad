"""End-to-end `supctl update` and SIGHUP: apply an edited config file to a running daemon.

Every test runs a real daemon (tests/helpers/) with real children; teardown fails a
test whose daemon leaves any process behind. Waits poll a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path

from conftest import DaemonFactory
from helpers import RunningDaemon, free_port, pid_alive
from helpers.edits import (
    INSTANCES,
    edit,
    generations,
    pids,
    port_of,
    refused,
    three_apps,
    web_app,
)


def check_applied(
    d: RunningDaemon, tmp_path: Path, before: dict[str, dict[str, int]], gone_port: int
) -> None:
    """The edit of :func:`edit` took effect and nothing else moved."""
    status = d.http_status()["apps"]
    assert set(status) == {"keep", "change", "new"}
    assert status["new"]["instances"]["primary"]["state"] == "RUNNING"
    gone = list(before["gone"].values())
    d.wait_for(lambda: not any(pid_alive(p) for p in gone), 5, "the removed app's pids to exit")
    assert refused(gone_port), "the removed app's socket is still open"
    assert d.supctl("status", "gone").returncode == 4
    for name in INSTANCES:
        inst = status["change"]["instances"][name]
        assert inst["state"] == "RUNNING" and inst["generation"] == 2
        assert inst["pid"] != before["change"][name]
        report = json.loads((tmp_path / f"env-{name}-2.json").read_text())
        assert report["pid"] == inst["pid"] and report["env"]["COLOUR"] == "blue"
    keep = status["keep"]["instances"]["primary"]
    assert keep["pid"] == before["keep"]["primary"] and keep["generation"] == 1


def test_update_adds_removes_and_hot_swaps(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """`supctl update` starts an added app, stops a removed one, hot-swaps a changed one."""
    d = make_daemon(three_apps(tmp_path))
    before = pids(d)
    gone_port = port_of(d.config["apps"]["gone"])
    edit(d, free_port())

    cp = d.supctl("update", json_output=True)

    assert cp.returncode == 0, cp.stderr
    result = json.loads(cp.stdout.splitlines()[-1])["result"]
    assert (result["added"], result["removed"]) == (["new"], ["gone"])
    assert (result["swapped"], result["unchanged"]) == (["change"], ["keep"])
    check_applied(d, tmp_path, before, gone_port)


def bad_key(d: RunningDaemon) -> int:
    """Put an unknown key into the file; the line it is on."""
    d.config["apps"]["change"]["bogus_key"] = 1
    d.write_config()
    lines = d.config_path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if '"bogus_key"' in line)


def test_invalid_config_changes_nothing(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """An update to a file with an unknown key exits 2 naming file:line and changes nothing."""
    d = make_daemon(three_apps(tmp_path))
    before, gens = pids(d), generations(d)
    edit(d, free_port())  # valid edits beside the bad key: none of them may be applied
    line = bad_key(d)

    cp = d.supctl("update")

    assert cp.returncode == 2, cp.stderr
    assert f"{d.config_path}:{line}:" in cp.stderr, cp.stderr
    assert "bogus_key" in cp.stderr
    assert pids(d) == before and generations(d) == gens
    assert all(pid_alive(p) for app in before.values() for p in app.values())


def test_sighup_does_what_update_does(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """SIGHUP applies an edited file like `supctl update`, and an invalid file changes nothing."""
    d = make_daemon(three_apps(tmp_path))
    before = pids(d)
    gone_port = port_of(d.config["apps"]["gone"])
    edit(d, free_port())

    os.kill(d.pid_of_daemon, signal.SIGHUP)

    def applied() -> bool:
        status = d.http_status()
        apps = status["apps"]
        return (
            status["supervisor"]["state"] == "running"
            and set(apps) == {"keep", "change", "new"}
            and all(
                i["state"] == "RUNNING" and i["generation"] == 2 and not i["swapping"]
                for i in apps["change"]["instances"].values()
            )
            and apps["new"]["instances"]["primary"]["state"] == "RUNNING"
        )

    d.wait_for(applied, 15, "the SIGHUP update to be applied")
    d.wait_for(lambda: d.events("update_done"), 5, "the update_done log record")
    check_applied(d, tmp_path, before, gone_port)

    after, gens = pids(d), generations(d)
    line = bad_key(d)
    os.kill(d.pid_of_daemon, signal.SIGHUP)
    failed = d.wait_for(lambda: d.events("update_failed"), 10, "the update_failed log record")
    assert f"{d.config_path}:{line}:" in failed[-1]["reason"], failed[-1]
    assert pids(d) == after and generations(d) == gens


def test_update_after_a_failed_update_tries_again(make_daemon: DaemonFactory) -> None:
    """After an update whose swap failed, updating the same file again does not report success."""
    port = free_port()
    d = make_daemon({"web": web_app(port, INSTANCES)})
    before = pids(d)
    d.config["apps"]["web"]["env"] = {"CRASH_AT_BOOT": "3"}
    d.config["apps"]["web"]["ready"]["timeout"] = 10
    d.write_config()
    assert d.supctl("update").returncode == 1

    cp = d.supctl("update")

    assert pids(d) == before, "the old generations should still serve"
    assert cp.returncode == 1, (
        f"update exited {cp.returncode} with the file not applied:\n{cp.stdout}"
    )


def test_update_with_unchanged_file_touches_nothing(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """`supctl update` of an unedited file exits 0 and leaves every process as it was."""
    d = make_daemon(three_apps(tmp_path))
    before, gens = pids(d), generations(d)

    cp = d.supctl("update", json_output=True)

    assert cp.returncode == 0, cp.stderr
    result = json.loads(cp.stdout.splitlines()[-1])["result"]
    assert sorted(result["unchanged"]) == ["change", "gone", "keep"]
    assert pids(d) == before and generations(d) == gens


def state_apps(d: RunningDaemon) -> set[str]:
    """The apps of the config text state.json records (what a successor would run)."""
    state = json.loads((d.state_dir / "state.json").read_text())
    return set(json.loads(state["config_text"])["apps"])


def test_taken_port_changes_nothing_and_a_retry_applies(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A new app's port held by a foreign process: the update is refused before anything
    is stopped, swapped or bound (same pids, the removed app still serves, the record of
    the running config unchanged); once the port is free the same update applies in full."""
    d = make_daemon(three_apps(tmp_path))
    before, gens = pids(d), generations(d)
    gone_port = port_of(d.config["apps"]["gone"])
    new_port = free_port()
    edit(d, new_port)
    d.wait_for(lambda: state_apps(d) == {"keep", "change", "gone"}, 5, "state.json")
    foreign = socket.socket()
    try:
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        foreign.bind(("127.0.0.1", new_port))
        foreign.listen(1)

        cp = d.supctl("update", json_output=True)

        assert cp.returncode == 1, cp.stdout + cp.stderr
        error = json.loads(cp.stdout.splitlines()[-1])["error"]
        assert "cannot listen on" in error["message"] and "nothing changed" in error["message"]
        assert error["applied"] == [] and set(error["not_applied"]) == {"change", "gone", "new"}
        assert pids(d) == before and generations(d) == gens
        assert set(d.http_status()["apps"]) == {"keep", "change", "gone"}
        assert not refused(gone_port), "the app that was to be removed must still serve"
        plan = json.loads(d.supctl("plan", json_output=True).stdout.splitlines()[-1])["result"]
        assert (plan["added"], plan["removed"], plan["swapped"]) == (["new"], ["gone"], ["change"])
        assert state_apps(d) == {"keep", "change", "gone"}
    finally:
        foreign.close()
    # nothing leaked: the daemon holds no socket on the port it failed to bind
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", new_port))

    cp = d.supctl("update", json_output=True)

    assert cp.returncode == 0, cp.stdout + cp.stderr
    result = json.loads(cp.stdout.splitlines()[-1])["result"]
    assert (result["added"], result["removed"], result["swapped"]) == (
        ["new"],
        ["gone"],
        ["change"],
    )
    check_applied(d, tmp_path, before, gone_port)
    d.wait_for(lambda: state_apps(d) == {"keep", "change", "new"}, 5, "state.json to follow")


def test_update_to_an_empty_config_needs_allow_empty(make_daemon: DaemonFactory) -> None:
    """A 0-byte file, or one without `apps:`, would stop every app: refused (exit 2,
    nothing stopped) unless `update --allow-empty`."""
    d = make_daemon({"web": web_app(free_port())})
    before = pids(d)
    for text in ("", json.dumps({"supervisor": d.config["supervisor"]})):
        d.config_path.write_text(text)
        cp = d.supctl("update")
        assert cp.returncode == 2, cp.stdout + cp.stderr
        assert "update refused" in cp.stderr and "--allow-empty" in cp.stderr
        assert pids(d) == before

    cp = d.supctl("update", "--allow-empty", json_output=True)

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads(cp.stdout.splitlines()[-1])["result"]["removed"] == ["web"]
    assert d.http_status()["apps"] == {}
    d.wait_for(lambda: not pid_alive(before["web"]["primary"]), 10, "the app to stop")


def test_failed_swap_stops_the_update_and_says_what_was_applied(
    make_daemon: DaemonFactory,
) -> None:
    """Two changed apps, the first (in order) fails its swap: it stays on its old config
    (its backup fails first), nothing else is applied, and the error names both lists."""
    d = make_daemon(
        {
            "bad": web_app(free_port(), INSTANCES),
            "later": web_app(free_port()),
            "x": web_app(free_port()),
        }
    )
    before = pids(d)
    d.config["apps"]["bad"]["env"] = {"CRASH_AT_BOOT": "3"}
    d.config["apps"]["later"]["env"] = {"COLOUR": "blue"}
    del d.config["apps"]["x"]
    d.write_config()

    cp = d.supctl("update", json_output=True)

    assert cp.returncode == 1, cp.stdout + cp.stderr
    error = json.loads(cp.stdout.splitlines()[-1])["error"]
    assert error["applied"] == [] and error["not_applied"] == ["x", "bad", "later"]
    assert "update stopped" in error["message"]
    assert pids(d) == before
    plan = json.loads(d.supctl("plan", json_output=True).stdout.splitlines()[-1])["result"]
    assert (plan["swapped"], plan["removed"]) == (["bad", "later"], ["x"])


def test_restart_keeps_the_socket_open(make_daemon: DaemonFactory) -> None:
    """An app whose instances change is restarted, but its address is handed over to
    the new app, never closed: no connection is refused while the update runs."""
    port = free_port()
    d = make_daemon({"web": web_app(port)})
    old = pids(d)["web"]["primary"]
    d.config["apps"]["web"]["instances"] = list(INSTANCES)
    d.write_config()
    plan = json.loads(d.supctl("plan", json_output=True).stdout.splitlines()[-1])["result"]
    assert plan["restarted"] == ["web"] and plan["sockets"]["moved"] == [f"127.0.0.1:{port}"]
    done = threading.Event()
    outcomes: list[int] = []

    def knock() -> None:
        while not done.is_set() and len(outcomes) < 20_000:
            with socket.socket() as s:
                s.settimeout(5)
                outcomes.append(s.connect_ex(("127.0.0.1", port)))

    knocker = threading.Thread(target=knock)
    knocker.start()
    try:
        cp = d.supctl("update", json_output=True)
    finally:
        done.set()
        knocker.join(30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads(cp.stdout.splitlines()[-1])["result"]["restarted"] == ["web"]
    assert outcomes and all(code == 0 for code in outcomes), sorted(set(outcomes))
    now = pids(d)["web"]
    assert set(now) == set(INSTANCES) and old not in now.values()


def test_an_instance_swapped_before_a_failed_swap_is_swapped_back(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The backup takes the new config, the primary's swap then fails: the backup is
    swapped back onto the config the app is recorded to run, so the record is the truth;
    once the cause is gone the same update applies to both."""
    report = str(tmp_path / "env-{instance}-{generation}.json")
    d = make_daemon({"web": web_app(free_port(), INSTANCES, COLOUR="red", ENV_FILE=report)})
    before = pids(d)["web"]
    hold = tmp_path / "hold-primary"
    hold.touch()  # the primary's new generation never becomes ready while this exists
    web = d.config["apps"]["web"]
    web["env"].update(COLOUR="blue", HOLD_FILE=str(tmp_path / "hold-{instance}"))
    web["ready"]["timeout"] = 2
    d.write_config()

    cp = d.supctl("update", json_output=True)

    assert cp.returncode == 1, cp.stdout + cp.stderr
    error = json.loads(cp.stdout.splitlines()[-1])["error"]
    assert (error["applied"], error["not_applied"]) == ([], ["web"])
    backup = d.wait_state("web", "backup", "RUNNING", 10)
    assert backup["generation"] == 3, backup  # 2: the new config, 3: back on the old one
    seen = json.loads((tmp_path / "env-backup-3.json").read_text())["env"]
    assert seen["COLOUR"] == "red" and "HOLD_FILE" not in seen
    assert d.instance("web", "primary")["pid"] == before["primary"]
    hold.unlink()

    cp = d.supctl("update")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    for name in INSTANCES:
        gen = d.wait_state("web", name, "RUNNING", 10)["generation"]
        seen = json.loads((tmp_path / f"env-{name}-{gen}.json").read_text())["env"]
        assert seen["COLOUR"] == "blue", name
