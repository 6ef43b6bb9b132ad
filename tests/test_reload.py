"""End-to-end hot swaps: `supctl reload`, SIGUSR2, re-exec apps, and the "never worse" rule.

Every test runs a real daemon (tests/helpers/) with real children and real clients;
teardown fails a test whose daemon leaves any process behind. Load loops are
bounded in requests and in time; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import (
    APPS_DIR,
    PYTHON,
    REPO,
    TESTAPP,
    RunningDaemon,
    app_cmd,
    children_of,
    descendants_of,
    free_port,
    http_get,
    parent_of,
    pid_alive,
    proc_state,
    wait_until,
)
from helpers.load import Load
from helpers.nginx import Nginx, nginx_or_skip

REEXEC_APP = APPS_DIR / "reexec_app.py"
INSTANCES = ("primary", "backup")


# --------------------------------------------------------------------------- configs


def shared_web(port: int, ready_timeout: float = 10.0, **env: object) -> dict[str, Any]:
    """testapp as primary+backup on one shared socket, ready by an attributed HTTP check."""
    return {
        **app_cmd(**env),
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": ready_timeout},
        "stop": {"timeout": 5},
        "backoff": {"initial": 0.2, "max": 1},
    }


def gunicorn_cmd(*extra: str) -> list[str]:
    return [
        PYTHON, "-m", "gunicorn", "tests.apps.wsgi_hello:app", "-w", "2",
        "--graceful-timeout", "5", "--no-control-socket", *extra,
    ]  # fmt: skip


def gunicorn_web(port: int) -> dict[str, Any]:
    """A real gunicorn (2 workers) as primary+backup taking the shared socket by LISTEN_FDS."""
    return {
        "command": gunicorn_cmd(),
        "cwd": str(REPO),
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 30},
        "stop": {"timeout": 10},
    }


# --------------------------------------------------------------------------- small helpers


def instances(d: RunningDaemon, app: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = d.http_status()["apps"][app]["instances"]
    return result


def running(
    d: RunningDaemon, app: str, names: tuple[str, ...] = INSTANCES, timeout: float = 15.0
) -> dict[str, dict[str, Any]]:
    """Wait until every named instance is RUNNING; their statuses."""
    return {n: d.wait_state(app, n, "RUNNING", timeout) for n in names}


def line_index(lines: list[str], text: str) -> int:
    """Index of the first line containing ``text`` (fails naming the lines)."""
    for n, line in enumerate(lines):
        if text in line:
            return n
    raise AssertionError(f"no line contains {text!r}:\n" + "\n".join(lines))


def served_pids(port: int, requests: int = 30) -> set[int]:
    """The testapp pids that answered ``requests`` GETs (each on a new connection)."""
    pids: set[int] = set()
    for _ in range(requests):
        code, body = http_get("127.0.0.1", port, "/")
        assert code == 200, (code, body)
        pids.add(int(json.loads(body)["pid"]))
    return pids


def app_processes(d: RunningDaemon) -> set[int]:
    """Every live (non-zombie) process under the daemon."""
    return {p for p in d.record_tree() if pid_alive(p)}


def assert_failed_swap_kept_old(
    d: RunningDaemon,
    port: int,
    before: dict[str, dict[str, Any]],
    cp: subprocess.CompletedProcess[str],
) -> None:
    """The backup's swap failed: exit 1, old pids serve, primary untouched, no candidate left."""
    assert cp.returncode == 1, f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    assert "web:backup" in cp.stderr and "the old generation keeps serving" in cp.stderr, cp.stderr
    assert "web:primary swapping" not in cp.stderr, "the swap went on to the primary"
    now = instances(d, "web")
    for name in INSTANCES:
        assert now[name]["state"] == "RUNNING", now[name]
        assert now[name]["pid"] == before[name]["pid"], f"{name} was replaced"
        assert pid_alive(before[name]["pid"])
    assert now["primary"]["generation"] == before["primary"]["generation"], "primary touched"
    last_swap = d.http_status()["apps"]["web"]["last_swap"]
    assert last_swap["ok"] is False and last_swap["instance"] == "backup", last_swap
    assert last_swap["reason"], last_swap
    old = {before[n]["pid"] for n in INSTANCES}
    d.wait_for(lambda: app_processes(d) == old, 10, "the failed candidate to be gone")
    assert served_pids(port) <= old


# --------------------------------------------------------------------------- 1. reload


def test_reload_swaps_backup_then_primary(make_daemon: DaemonFactory) -> None:
    """`supctl reload web` gives each instance a new pid and generation +1, backup first, exit 0."""
    port = free_port()
    d = make_daemon({"web": shared_web(port)})
    before = running(d, "web")

    cp = d.supctl("reload", "web")

    assert cp.returncode == 0, cp.stderr
    lines = cp.stderr.splitlines()
    order = [
        line_index(lines, "web:backup swapping (generation 1 keeps serving"),
        line_index(lines, "web:backup now generation 2"),
        line_index(lines, "web:primary swapping (generation 1 keeps serving"),
        line_index(lines, "web:primary now generation 2"),
    ]
    assert order == sorted(order), lines
    after = instances(d, "web")
    for name in INSTANCES:
        assert after[name]["state"] == "RUNNING"
        assert after[name]["generation"] == before[name]["generation"] + 1
        assert after[name]["pid"] != before[name]["pid"]
    old_pids = [before[n]["pid"] for n in INSTANCES]
    d.wait_for(lambda: not any(pid_alive(p) for p in old_pids), 5, "the old generations to exit")
    new = {after[n]["pid"] for n in INSTANCES}
    assert served_pids(port) <= new
    _, body = http_get("127.0.0.1", port, "/")
    assert json.loads(body)["generation"] == "2"


@pytest.mark.slow
def test_reloads_of_gunicorn_under_load_fail_no_request(make_daemon: DaemonFactory) -> None:
    """Five reloads of a real gunicorn on a shared LISTEN_FDS socket under load fail no request."""
    port = free_port()
    d = make_daemon({"web": gunicorn_web(port)})
    first = running(d, "web", timeout=30)

    with Load(port, threads=3, pause=0, max_seconds=60, timeout=15) as load:
        load.wait_ok(50)
        for n in range(5):
            cp = d.supctl("reload", "web")
            assert cp.returncode == 0, f"reload {n + 1}: {cp.stderr}"
        load.wait_ok(50)
    load.report("gunicorn, 5 reloads")

    assert load.failures == [], load.failures[:10]
    assert load.ok >= 100
    after = instances(d, "web")
    for name in INSTANCES:
        assert after[name]["generation"] == first[name]["generation"] + 5
        assert after[name]["state"] == "RUNNING"
        assert not pid_alive(first[name]["pid"])


def test_sigusr2_reloads_every_app(make_daemon: DaemonFactory) -> None:
    """SIGUSR2 to the daemon hot-swaps every instance of every app (generation +1, new pids)."""
    d = make_daemon(
        {
            "web": shared_web(free_port()),
            "api": {**shared_web(free_port()), "instances": ["primary"]},
        }
    )
    before = {
        (a, n): s
        for a, names in (("web", INSTANCES), ("api", ("primary",)))
        for n, s in running(d, a, names).items()
    }

    os.kill(d.pid_of_daemon, signal.SIGUSR2)

    def all_swapped() -> bool:
        status = d.http_status()["apps"]
        for (app, name), old in before.items():
            now = status[app]["instances"][name]
            if not (
                now["state"] == "RUNNING"
                and now["generation"] == old["generation"] + 1
                and now["pid"] not in (None, old["pid"])
                and not now["swapping"]
            ):
                return False
        return True

    d.wait_for(all_swapped, 20, "every instance to run generation 2")
    old_pids = [old["pid"] for old in before.values()]
    d.wait_for(lambda: not any(pid_alive(p) for p in old_pids), 5, "the old generations to exit")


# --------------------------------------------------------------------------- 2. never worse


def test_sick_new_generation_is_not_promoted(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A g+1 whose /health says 503 on a shared socket (where g says 200) is not promoted."""
    port = free_port()
    # HEALTH_FILE exists only for the generation the test marks sick: g+1 of the backup
    d = make_daemon({"web": shared_web(port, 1.5, HEALTH_FILE=str(tmp_path / "sick-{generation}"))})
    before = running(d, "web")
    (tmp_path / "sick-2").write_text("")

    cp = d.supctl("reload", "web")

    assert_failed_swap_kept_old(d, port, before, cp)
    assert "not ready within 1.5s" in cp.stderr, cp.stderr
    assert "swap failed" in (instances(d, "web")["backup"]["last_error"] or "")


def test_failed_swap_reason_is_the_candidates_own_answer(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The reason a sick g+1 failed names its own answer (HTTP 503), not others' connections."""
    port = free_port()
    # five processes share the socket so most probe connections land on a healthy old one
    cfg = shared_web(port, 1.0, HEALTH_FILE=str(tmp_path / "sick"))
    cfg["instances"] = ["primary", "b1", "b2", "b3", "b4"]
    d = make_daemon({"web": cfg})
    running(d, "web", tuple(cfg["instances"]))
    (tmp_path / "sick").write_text("")  # from now on every /health says 503

    reasons = []
    for _ in range(3):  # the last probe is the candidate's own about 1 time in 6
        cp = d.supctl("reload", "web")
        assert cp.returncode == 1, cp.stderr
        reasons.append(d.http_status()["apps"]["web"]["last_swap"]["reason"])
    assert all("HTTP 503" in r for r in reasons), reasons


def test_failed_swap_keeps_the_generation_number(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """After a failed swap, status shows the generation of the process that still serves."""
    port = free_port()
    d = make_daemon({"web": shared_web(port, 1.0, HEALTH_FILE=str(tmp_path / "sick-{generation}"))})
    before = running(d, "web")
    (tmp_path / "sick-2").write_text("")

    assert d.supctl("reload", "web").returncode == 1

    backup = instances(d, "web")["backup"]
    assert backup["pid"] == before["backup"]["pid"]
    with open(f"/proc/{backup['pid']}/environ", "rb") as f:
        env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
    assert env[b"SUPERVISOR_GENERATION"] == b"1"
    assert backup["generation"] == 1, "status names a generation that is not running"


def test_generation_crashing_at_boot_is_not_promoted(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A g+1 that exits at boot fails the reload with its output lines; g keeps serving."""
    port = free_port()
    cfg = shared_web(port)
    # the shell exits for the generation the test marks, else execs testapp (same pid)
    cfg["command"] = [
        "sh", "-c",
        f'if [ -e {tmp_path}/crash-{{generation}} ]; then '
        'echo "fatal: generation {generation} cannot open its database (simulated)"; exit 3; fi; '
        'exec "$0" "$1"',
        PYTHON, str(TESTAPP),
    ]  # fmt: skip
    d = make_daemon({"web": cfg})
    before = running(d, "web")
    (tmp_path / "crash-2").write_text("")

    cp = d.supctl("reload", "web")

    assert_failed_swap_kept_old(d, port, before, cp)
    assert "exited with status 3 before it was ready" in cp.stderr, cp.stderr
    assert "fatal: generation 2 cannot open its database (simulated)" in cp.stderr, cp.stderr


@pytest.mark.parametrize(
    ("change", "timeout", "reason"),
    [
        ({"env": {"CRASH_AT_BOOT": "3"}}, 10, "exited with status 3 before it was ready"),
        ({"env": {"BOOT_DELAY": "30"}}, 1.5, "not ready within 1.5s"),
        ({"command": ["/nonexistent/bin/web-server"]}, 10, "/nonexistent/bin/web-server"),
    ],
    ids=["crashes-at-boot", "never-accepts", "cannot-spawn"],
)
def test_update_to_a_broken_generation_keeps_the_old(
    make_daemon: DaemonFactory, change: dict[str, Any], timeout: float, reason: str
) -> None:
    """An update onto a process that crashes, never accepts or cannot spawn keeps g serving."""
    port = free_port()
    d = make_daemon({"web": shared_web(port, timeout)})
    before = running(d, "web")
    d.config["apps"]["web"].update(change)
    d.write_config()

    cp = d.supctl("update")

    assert_failed_swap_kept_old(d, port, before, cp)
    assert reason in cp.stderr, cp.stderr


def test_update_failure_shows_the_candidates_output(make_daemon: DaemonFactory) -> None:
    """A failed `update` shows the crashing candidate's last output lines, as `reload` does."""
    port = free_port()
    d = make_daemon({"web": shared_web(port)})
    running(d, "web")
    d.config["apps"]["web"]["env"] = {"CRASH_AT_BOOT": "3"}
    d.write_config()

    cp = d.supctl("update")

    assert cp.returncode == 1, cp.stderr
    assert "fatal: cannot connect to the database (simulated)" in cp.stderr, cp.stderr


# --------------------------------------------------------------------------- 3. behind nginx


@pytest.mark.nginx
@pytest.mark.slow
def test_reloads_behind_nginx_fail_no_request(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Apps binding their port themselves (SO_REUSEPORT) reload 3x behind nginx failing nothing."""
    binary = nginx_or_skip()
    primary, backup = free_port(), free_port()
    # gunicorn --reuse-port: each worker binds {port} with SO_REUSEPORT, and on TERM
    # finishes the request it is serving (testapp's TERM cuts in-flight requests, which
    # no supervisor can make up for). The connections still queued on a retired
    # generation's own listener are reset by the kernel (tcp_migrate_req is off by
    # default); nginx retries them on the other server (proxy_next_upstream error).
    d = make_daemon(
        {
            "web": {
                "command": gunicorn_cmd("--bind", "127.0.0.1:{port}", "--reuse-port"),
                "cwd": str(REPO),
                "instances": list(INSTANCES),
                "listen": {"primary": f"127.0.0.1:{primary}", "backup": f"127.0.0.1:{backup}"},
                "socket_activation": False,
                "reload": "swap",  # SO_REUSEPORT: two generations can share the port
                "ready": {"http": "http://{host}:{port}/", "timeout": 20},
                "stop": {"timeout": 10},
            }
        }
    )
    first = running(d, "web", timeout=30)
    # max_fails=0: with nginx's default (1 failure disables a server for 10 s), one reset
    # on the primary's swap and one on the backup's swap of the next reload disable both
    # servers and nginx answers 502 "no live upstreams" until fail_timeout expires
    servers = [f"127.0.0.1:{primary} max_fails=0", f"127.0.0.1:{backup} backup max_fails=0"]
    nginx = Nginx(binary, tmp_path / "nginx", servers=servers).start()
    try:
        with Load(nginx.port, threads=3, pause=0, max_seconds=40, timeout=15) as load:
            load.wait_ok(50)
            for n in range(3):
                cp = d.supctl("reload", "web")
                assert cp.returncode == 0, f"reload {n + 1}: {cp.stderr}"
            load.wait_ok(50)
        load.report("gunicorn --reuse-port behind nginx, 3 reloads")
        assert load.failures == [], (load.failures[:10], nginx.log())
        assert load.ok >= 100
    finally:
        nginx.stop()
    after = instances(d, "web")
    for name in INSTANCES:
        assert after[name]["generation"] == first[name]["generation"] + 3
        assert not pid_alive(first[name]["pid"])
    assert hello_pid(primary) in children_of(after["primary"]["pid"]), "not the new primary"


# --------------------------------------------------------------------------- own port


def own_port_web(**env: object) -> dict[str, Any]:
    """testapp binding its own port per instance (socket_activation: false): it cannot
    run twice, so reload: restart is its default."""
    return {
        **app_cmd(**env),
        "instances": list(INSTANCES),
        "listen": {"primary": f"127.0.0.1:{free_port()}", "backup": f"127.0.0.1:{free_port()}"},
        "socket_activation": False,
        "ready": {"tcp": "{host}:{port}", "timeout": 10},
        "stop": {"timeout": 5},
    }


def test_own_port_app_reloads_stop_then_start_backup_first(make_daemon: DaemonFactory) -> None:
    """reload of an app that binds its own port: each instance is stopped, then started
    (its old process gone before the new one is spawned), backup first, the primary
    untouched until the backup is ready again; the progress lines say so."""
    d = make_daemon({"web": own_port_web()})
    before = running(d, "web")
    cp = d.supctl("reload", "web")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stderr.splitlines()
    backup_line = line_index(lines, "web:backup restart (stop-then-start)")
    assert backup_line < line_index(lines, "web:primary restart (stop-then-start)")
    after = running(d, "web")
    for name in INSTANCES:
        assert after[name]["pid"] != before[name]["pid"]
        assert not pid_alive(before[name]["pid"])
        assert after[name]["generation"] == before[name]["generation"] + 1
    swaps = [e for e in d.events("swap_finished") if e.get("kind") == "reload"]
    assert [e["instance"] for e in swaps] == ["web:backup", "web:primary"], swaps
    for e in swaps:
        assert e["method"] == "restart" and e["outcome"] == "ok", e
        assert e["retired_after_s"] <= e["spawned_after_s"], f"not stopped first: {e}"


def test_own_port_app_failed_restart_goes_back_to_what_it_ran(
    make_daemon: DaemonFactory,
) -> None:
    """An update whose new generation crashes at boot: the backup is stopped, its new
    generation fails, and the old config is started again (gated); the update exits 1
    with the app's own message; the primary is never touched."""
    d = make_daemon({"web": own_port_web()})
    before = running(d, "web")
    d.config["apps"]["web"]["env"]["CRASH_AT_BOOT"] = "3"
    d.write_config()
    plan = d.supctl("update", "--dry-run")
    assert "web: restart (stop-then-start) backup, primary in turn" in plan.stdout, plan.stdout
    cp = d.supctl("update")
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    text = cp.stdout + cp.stderr
    assert "restarted on what it ran before" in text, text
    assert "cannot connect to the database (simulated)" in text, text
    after = running(d, "web")
    assert after["primary"]["pid"] == before["primary"]["pid"]
    assert after["backup"]["pid"] != before["backup"]["pid"]
    failed = [e for e in d.events("swap_finished") if e.get("instance") == "web:backup"]
    assert failed and failed[-1]["outcome"] == "kept_old", failed
    # the backup serves what it ran before (no CRASH_AT_BOOT): a second reload works
    d.config["apps"]["web"]["env"].pop("CRASH_AT_BOOT")
    d.write_config()
    assert d.supctl("reload", "web").returncode == 0


# --------------------------------------------------------------------------- 5. re-exec apps


def reexec_web(port: int, pidfile: Path, timeout: float = 10, **env: object) -> dict[str, Any]:
    """reexec_app.py as one instance that re-execs itself on USR2 (reload follows $PIDFILE)."""
    return {
        "command": [PYTHON, str(REEXEC_APP)],
        "env": {"PIDFILE": str(pidfile), **{k: str(v) for k, v in env.items()}},
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": timeout},
        "reload": {"signal": "USR2", "pidfile": str(pidfile)},
        "stop": {"timeout": 5},
        "backoff": {"initial": 0.2, "max": 1},
    }


def get_json(port: int) -> dict[str, Any]:
    code, body = http_get("127.0.0.1", port, "/")
    assert code == 200, (code, body)
    result: dict[str, Any] = json.loads(body)
    return result


def test_reexec_app_is_followed_through_its_pidfile(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """After USR2 the new master is the instance's pid, the supervisor's child, and respawned."""
    port, pidfile = free_port(), tmp_path / "app.pid"
    d = make_daemon({"rx": reexec_web(port, pidfile)})
    old = running(d, "rx", ("primary",))["primary"]

    d.supctl_ok("reload", "rx")

    inst = d.instance("rx", "primary")
    new = inst["pid"]
    assert inst["state"] == "RUNNING" and inst["generation"] == old["generation"] + 1
    assert new != old["pid"] and pidfile.read_text().strip() == str(new)
    d.wait_for(lambda: proc_state(old["pid"]) is None, 5, "the old master to exit and be reaped")
    assert parent_of(new) == d.pid_of_daemon, "the supervisor (subreaper) is not the new parent"
    served = get_json(port)
    assert served["pid"] == new and served["reexecs"] == 1

    os.kill(new, signal.SIGKILL)

    def respawned() -> dict[str, Any] | None:
        now = d.instance("rx", "primary", fast=True)
        return now if now["state"] == "RUNNING" and now["pid"] not in (None, new) else None

    again = d.wait_for(respawned, 10, "the killed new master to be respawned")
    assert again["restarts"] == 1
    d.wait_for(lambda: proc_state(new) is None, 5, "the killed master to be reaped")
    served = get_json(port)
    assert served["pid"] == again["pid"] and served["reexecs"] == 0
    assert parent_of(again["pid"]) == d.pid_of_daemon


def test_failed_reexec_keeps_the_old_master(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A re-exec whose new master dies at boot fails the reload; the old master serves on."""
    port, pidfile = free_port(), tmp_path / "app.pid"
    d = make_daemon({"rx": reexec_web(port, pidfile, 1.5, REEXEC_FAIL=1)})
    old = running(d, "rx", ("primary",))["primary"]

    cp = d.supctl("reload", "rx")

    assert cp.returncode == 1, cp.stderr
    assert "the old generation keeps serving" in cp.stderr, cp.stderr
    inst = d.instance("rx", "primary")
    assert inst["state"] == "RUNNING" and inst["pid"] == old["pid"]
    assert get_json(port)["pid"] == old["pid"]


def test_reexec_not_found_in_pidfile_leaves_nothing_behind(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A re-exec whose new master never shows in the pidfile fails, leaving only the old master."""
    port, pidfile = free_port(), tmp_path / "app.pid"
    d = make_daemon({"rx": reexec_web(port, pidfile, 1.5, REEXEC_PIDFILE_SUFFIX=".new")})
    old = running(d, "rx", ("primary",))["primary"]

    cp = d.supctl("reload", "rx")

    assert cp.returncode == 1, cp.stderr
    assert d.instance("rx", "primary")["pid"] == old["pid"]
    stray = wait_until(lambda: Path(f"{pidfile}.new").exists(), 5, "the new copy to boot")
    assert stray
    d.wait_for(lambda: app_processes(d) == {old["pid"]}, 2, "only the old master to remain")


def gunicorn_reexec(port: int, pidfile: Path, followed: Path) -> dict[str, Any]:
    """A real gunicorn master that re-execs on USR2 (it binds {port} itself: its USR2 with
    LISTEN_FDS cannot work, since gunicorn closes fd 3 after dup-ing it)."""
    return {
        "command": gunicorn_cmd("--pid", str(pidfile), "--bind", "127.0.0.1:{port}"),
        "cwd": str(REPO),
        "listen": f"127.0.0.1:{port}",
        "socket_activation": False,
        "ready": {"http": "http://{host}:{port}/", "timeout": 4},
        "reload": {"signal": "USR2", "pidfile": str(followed)},
        "stop": {"signal": "TERM", "timeout": 10},
    }


def hello_pid(port: int) -> int:
    """The gunicorn worker pid that answered GET / (wsgi_hello says it)."""
    code, body = http_get("127.0.0.1", port, "/")
    assert code == 200, (code, body)
    return int(body.decode().split()[-1])


def check_gunicorn_reexec(d: RunningDaemon, port: int, app: str) -> None:
    old = running(d, app, ("primary",), timeout=30)["primary"]

    cp = d.supctl("reload", app)

    assert cp.returncode == 0, cp.stderr
    inst = d.instance(app, "primary")
    new = inst["pid"]
    assert inst["state"] == "RUNNING" and new != old["pid"]
    d.wait_for(lambda: proc_state(old["pid"]) is None, 15, "the old gunicorn master to be gone")
    assert parent_of(new) == d.pid_of_daemon
    masters = {p for p in descendants_of(d.pid_of_daemon) if parent_of(p) == d.pid_of_daemon}
    assert masters == {new}, f"more than one master: {masters}"
    workers = set(children_of(new))
    assert len(workers) == 2
    assert {hello_pid(port) for _ in range(10)} <= workers, "not served by the new master"


def test_gunicorn_usr2_reexec_is_followed(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A real gunicorn's USR2 re-exec (pidfile as given to --pid) ends with only the new master."""
    port, pidfile = free_port(), tmp_path / "gunicorn.pid"
    d = make_daemon({"gweb": gunicorn_reexec(port, pidfile, pidfile)})
    check_gunicorn_reexec(d, port, "gweb")


def test_gunicorn_usr2_reexec_followed_by_its_dot2_pidfile(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Following gunicorn's PIDFILE.2, each of two USR2 re-execs leaves only the new master."""
    port, pidfile = free_port(), tmp_path / "gunicorn.pid"
    d = make_daemon({"gweb": gunicorn_reexec(port, pidfile, Path(f"{pidfile}.2"))})
    check_gunicorn_reexec(d, port, "gweb")
    # the promoted master renames PIDFILE.2 to PIDFILE, so the next re-exec works again
    d.wait_for(lambda: not Path(f"{pidfile}.2").exists(), 5, "the new master to be promoted")
    check_gunicorn_reexec(d, port, "gweb")
