"""End to end: canary deploys, promote, rollback, pruning, on a real daemon.

Releases are built under ``tmp_path/root/releases/NAME`` as they would be by a
deploy tool: ``app.py`` is a copy of tests/apps/testapp.py (the good releases),
exits 2 at boot after saying why (``crash``), answers 503 on /health whatever its
environment says (``sick``), or boots in about 1 s (``slow``). The app runs
``python {release_dir}/app.py`` as primary and backup, one socket each, with HTTP
ready (``/``) and health (``/health``) checks and ``release: {keep: 2, settle: 1}``.

The zero-downtime test puts a real nginx in front (primary, and the backup marked
``backup``), as in etc/nginx-upstream.conf, and keeps a steady load on it while it
deploys, fails to deploy and rolls back: no request may fail.

The harness (tests/helpers/releases.py, load.py, nginx.py) is also used by
tests/bench/bench_deploy.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import DaemonFactory
from helpers import free_port, http_get
from helpers.load import under_load
from helpers.nginx import Nginx, nginx_or_skip
from helpers.releases import (
    APP,
    CRASH_REASON,
    PRIMARY_REASON,
    assert_failed,
    assert_ok,
    make_release,
    make_root,
    start_site,
    web_app,
)

# --------------------------------------------------------------------------- tests


@pytest.mark.nginx
@pytest.mark.slow  # about 6 s alone, over 10 s on a busy host
def test_deploys_and_rollback_drop_no_request_through_nginx(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    site = start_site(make_daemon, tmp_path)
    site.assert_on("v1", "v1", "v1", ["v1"])
    with Nginx(nginx_or_skip(), tmp_path / "nginx", site.primary, site.backup) as nginx:
        pids = {name: site.daemon.pid(APP, name) for name in ("primary", "backup")}

        # 1. a good deploy: backup, settle, primary, then `current`
        make_release(site.root, "v2")
        with under_load(nginx.port, "deploy v1 -> v2") as load:
            cp = site.deploy("deploy", APP, "v2")
        assert_ok(cp)
        assert load.releases["v1"] > 0 and load.releases["v2"] > 0
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        new_pids = {name: site.daemon.pid(APP, name) for name in ("primary", "backup")}
        assert not set(new_pids.values()) & set(pids.values())  # both were replaced

        # 2. a release that crashes at boot: the backup's new generation exits 2
        make_release(site.root, "crash", "crash")
        with under_load(nginx.port, "deploy of a crashing release") as load:
            cp = site.deploy("deploy", APP, "crash")
        assert_failed(cp, "deploy of crash failed", "exited", "2", CRASH_REASON)
        assert set(load.releases) == {"v2"}
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        # the old generations kept serving: nothing was restarted
        assert {name: site.daemon.pid(APP, name) for name in ("primary", "backup")} == new_pids

        # 3. a sick release: ready, but /health says 503 while the canary settles
        make_release(site.root, "sick", "sick")
        with under_load(nginx.port, "deploy of a sick release") as load:
            cp = site.deploy("deploy", APP, "sick")
        assert_failed(cp, "deploy of sick failed", "health", "503", "testapp backup pid")
        assert set(load.releases) == {"v2"}
        site.assert_on("v2", "v2", "v2", ["v1", "v2"], nginx)
        assert site.daemon.pid(APP, "primary") == new_pids["primary"]  # never touched

        # 4. rollback: back to v1, the release before current
        with under_load(nginx.port, "rollback") as load:
            cp = site.deploy("rollback", APP)
        assert_ok(cp)
        assert load.releases["v1"] > 0
        site.assert_on("v1", "v1", "v1", ["v1", "v2", "v1"], nginx)
        assert (site.root / "releases" / "v2").is_dir()  # the rollback target of next time


def test_paused_deploy_then_promote(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2")
    make_release(site.root, "v3")

    cp = site.deploy("deploy", APP, "v2", "--pause")
    assert_ok(cp)
    assert "promote" in cp.stdout + cp.stderr
    app = site.app_status()
    assert app["deploy"] is not None and app["deploy"]["release"] == "v2", app
    assert app["deploy"].get("phase") == "paused", app
    assert app["instances"]["backup"]["release"] == "v2"
    assert app["instances"]["primary"]["release"] == "v1"
    assert site.served(site.backup)["release"] == "v2"  # checkable on its own port
    assert site.served(site.primary)["release"] == "v1"
    assert app["instances"]["primary"]["pid"] == primary_pid
    assert app["release"] == "v1"
    assert site.current() == "releases/v1"  # nothing is current until promoted
    assert (site.history()["deployed"], site.history()["current"]) == (["v1"], "v1")
    # supctl status shows it too
    text = site.daemon.supctl("status").stdout
    assert "deploy" in text and "v2" in text, text

    # another deploy is refused while this one waits, and changes nothing
    cp = site.deploy("deploy", APP, "v3")
    assert_failed(cp, "paused")
    assert "promote" in cp.stderr + cp.stdout
    app = site.app_status()
    assert app["instances"]["backup"]["release"] == "v2"
    assert app["instances"]["primary"]["release"] == "v1"
    assert app["deploy"]["release"] == "v2"

    cp = site.deploy("promote", APP)
    assert_ok(cp)
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])
    assert site.daemon.pid(APP, "primary") != primary_pid

    # nothing left to promote: a usage error
    cp = site.deploy("promote", APP)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "no paused deploy" in cp.stderr


def test_rollback_of_a_paused_deploy(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2", "--pause"))
    assert site.served(site.backup)["release"] == "v2"

    cp = site.deploy("rollback", APP)
    assert_ok(cp)
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert site.daemon.pid(APP, "primary") == primary_pid  # the primary was never touched
    # the deploy is over: a new one may start (and completes)
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])


def test_failure_on_the_primary_returns_the_backup_to_the_old_release(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The canary passes but the primary's new generation fails: the backup is swapped
    back, the primary's old generation never stopped serving, nothing becomes current."""
    site = start_site(make_daemon, tmp_path, settle=0.2)
    primary_pid = site.daemon.pid(APP, "primary")
    make_release(site.root, "v2", "primary-crash")
    cp = site.deploy("deploy", APP, "v2")
    assert_failed(cp, "deploy of v2 failed", "web:primary", PRIMARY_REASON)
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert site.daemon.pid(APP, "primary") == primary_pid
    # and a good deploy afterwards goes through
    make_release(site.root, "v3")
    assert_ok(site.deploy("deploy", APP, "v3"))
    site.assert_on("v3", "v3", "v3", ["v1", "v3"])


def test_deploy_keeps_releases_uploaded_ahead(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    for name in ("v2", "v3", "v4"):  # a CI pipeline uploads releases as they are built
        make_release(site.root, name)
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])
    assert sorted(os.listdir(site.root / "releases")) == ["v1", "v2", "v3", "v4"]
    assert_ok(site.deploy("deploy", APP, "v3"))


def test_missing_release_changes_nothing(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    before = site.app_status()

    # nothing to roll back to yet
    assert_failed(site.deploy("rollback", APP), "no previous release")

    cp = site.deploy("deploy", APP, "v9")
    assert_failed(cp, str(site.root / "releases" / "v9"))
    after = site.app_status()
    for name in ("primary", "backup"):
        assert after["instances"][name]["pid"] == before["instances"][name]["pid"]
        assert after["instances"][name]["generation"] == before["instances"][name]["generation"]
    site.assert_on("v1", "v1", "v1", ["v1"])
    assert not (site.root / "releases" / "v9").exists()

    # a name that is a path is no release either
    assert_failed(site.deploy("deploy", APP, "../releases/v1"), "not found")
    site.assert_on("v1", "v1", "v1", ["v1"])


def test_crashed_backup_respawns_on_its_release(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    old = site.daemon.pid(APP, "backup")
    os.kill(old, signal.SIGKILL)
    site.daemon.wait_for(
        lambda: (
            (i := site.app_status()["instances"]["backup"])["state"] == "RUNNING"
            and i["pid"] not in (None, old)
        ),
        15,
        "the backup to be respawned",
    )
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    # a failed deploy leaves the instance's release alone: the next crash respawns v2
    make_release(site.root, "crash", "crash")
    assert_failed(site.deploy("deploy", APP, "crash"), CRASH_REASON)
    old = site.daemon.pid(APP, "backup")
    os.kill(old, signal.SIGKILL)
    site.daemon.wait_for(
        lambda: (
            (i := site.app_status()["instances"]["backup"])["state"] == "RUNNING"
            and i["pid"] not in (None, old)
        ),
        15,
        "the backup to be respawned",
    )
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])


def test_daemon_restart_keeps_the_history(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    assert site.daemon.terminate() == 0
    site.daemon.start()  # same config, same state_dir
    site.daemon.wait_running(APP, "primary", "backup", timeout=20)
    site.assert_on("v2", "v2", "v2", ["v1", "v2"])

    cp = site.deploy("rollback", APP)
    assert_ok(cp)
    site.assert_on("v1", "v1", "v1", ["v1", "v2", "v1"])


def test_pruning_keeps_current_running_and_recent(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    releases = site.root / "releases"
    deployed = ["v1"]
    gone: set[str] = set()
    for n in range(2, 6):
        name = f"v{n}"
        make_release(site.root, name)
        cp = site.daemon.supctl("deploy", APP, name, json_output=True)
        assert_ok(cp)
        final = json.loads(cp.stdout.strip().splitlines()[-1])
        deployed.append(name)
        kept = set(deployed[-3:])  # current and the 2 before it
        assert set(os.listdir(releases)) == kept, (name, os.listdir(releases))
        assert set(final["result"]["pruned"]) == set(deployed) - kept - gone, final
        gone |= set(final["result"]["pruned"])
        app = site.app_status()
        for inst in app["instances"].values():
            assert inst["release"] == name and (releases / name).is_dir()
        site.assert_on(name, name, name, deployed)
    assert sorted(os.listdir(releases)) == ["v3", "v4", "v5"]

    # rollback goes to v4 (kept), and v3 is still kept as a recent one
    assert_ok(site.deploy("rollback", APP))
    site.assert_on("v4", "v4", "v4", [*deployed, "v4"])
    assert sorted(os.listdir(releases)) == ["v3", "v4", "v5"]


def test_metrics_name_each_instances_release(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    site = start_site(make_daemon, tmp_path, settle=0.2)
    make_release(site.root, "v2")
    assert_ok(site.deploy("deploy", APP, "v2"))
    code, body = site.daemon.http("/metrics")
    assert code == 200
    text = body.decode()
    for inst in ("primary", "backup"):
        ids = f'app="{APP}",app_instance="{inst}",release="v2"'
        line = f"supervisord_lite_instance_info{{{ids}}} 1.0"
        assert line in text.splitlines(), text
    assert 'release="v1"' not in text


def test_a_deploy_refused_while_starting_leaves_no_release_behind(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A deploy refused because an instance is still starting changes nothing: that
    instance's next (automatic) start boots the release it had, not the refused one
    (a swap's parameters travel with its request; nothing is left pending)."""
    root = make_root(tmp_path)
    make_release(root, "v2")
    hold = tmp_path / "hold"
    primary, backup = free_port(), free_port()
    app = web_app(root, primary, backup)
    app["env"] = {"HOLD_FILE": str(hold)}
    d = make_daemon({APP: app}, start=False)
    hold.write_text("booting")
    d.start()
    try:
        d.wait_state(APP, "backup", "STARTING", timeout=10)
        cp = d.supctl("deploy", APP, "v2")
        assert cp.returncode == 1, cp.stdout + cp.stderr
    finally:
        hold.unlink()
    pids = d.wait_running(APP, "primary", "backup", timeout=20)
    os.kill(pids["backup"], signal.SIGKILL)  # the next start is an automatic one
    new = d.wait_for(
        lambda: (
            i
            if (i := d.instance(APP, "backup"))["state"] == "RUNNING"
            and i["pid"] not in (None, pids["backup"])
            else None
        ),
        20,
        "the backup restarted",
    )
    assert new["release"] == "v1", new
    assert json.loads(http_get("127.0.0.1", backup)[1])["release"] == "v1"
