"""The JVM apps the product was made for: a Clojure/Ring/Jetty app, end to end.

tests/jvm/app.clj runs as ``java -cp <Debian's jars> clojure.main app.clj`` (the Debian
packages default-jre-headless, clojure, libring-jetty-adapter-clojure; tests/run.sh
installs them), from releases under ``root/releases/NAME`` with a ``current`` link; the
release it answers on /version is its working directory's name.

- the classic layout: primary and backup each on its own port, Jetty binding it itself
  (``socket_activation: false``, so ``reload: restart``), nginx in front with the backup
  marked ``backup``, under wrk: a deploy (backup first), a deploy of a release whose JVM
  throws at boot (exit 1, the exception's text in supctl's answer, the primary never
  touched, current unchanged) and a rollback, 0 failed requests each;
- the kept socket on standard input (``socket_activation: stdin``, Jetty's
  ``setInheritChannel``), primary and backup sharing it, under load: kill -9 of the
  primary JVM (while no request is in flight: what a JVM accepted dies with it), a
  reload and a deploy fail no request (the app's SIGTERM drains: it stops accepting
  and answers everything it accepted before Jetty stops); a JVM stopped (SIGSTOP, as a
  long GC pause) for longer than the liveness window is replaced by a swap before it
  is killed; a JVM over ``max_memory`` is replaced; a JVM whose shutdown hook hangs is
  killed after ``stop.timeout``;
- the warm-up (``WARMUP``): a warming JVM serves the warm-up on a private port and
  leaves the shared socket alone until it is warm; a failed warm-up ends the boot
  with the app's message in supctl's answer.

After each step the version the app reports is the release /status shows. JVM boots
take seconds: each test shares its two JVMs across its steps.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import RunningDaemon, free_port, http_get, kill_dead, pid_alive, proc_state
from helpers.jvm import APP_CLJ, CLASSPATH, JAVA
from helpers.load import WRK, Load, Wrk
from helpers.nginx import Nginx, nginx_binary

BOOT_S = 90  # a JVM loading clojure, ring and jetty from source, on a busy 2-core machine
INSTANCES = ("primary", "backup")

needs_jvm = pytest.mark.skipif(
    JAVA is None or not all(Path(p).exists() for p in CLASSPATH.split(":")),
    reason="needs the Debian packages default-jre-headless, clojure and "
    "libring-jetty-adapter-clojure (tests/run.sh installs them)",
)


def jvm_command(*flags: str) -> list[str]:
    """The app's command. C1 only and the serial collector: the quickest boot."""
    assert JAVA is not None
    return [
        JAVA, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k", *flags,
        "-cp", CLASSPATH, "clojure.main", str(APP_CLJ),
    ]  # fmt: skip


def make_root(tmp_path: Path, *releases: str) -> Path:
    root = tmp_path / "root"
    for name in releases:
        (root / "releases" / name).mkdir(parents=True)
    os.symlink(os.path.join("releases", releases[0]), root / "current")
    return root


def broken_release(root: Path, name: str, why: str) -> None:
    """A release whose JVM throws at boot (the app reads THROW_AT_BOOT in its cwd)."""
    (root / "releases" / name).mkdir(parents=True)
    (root / "releases" / name / "THROW_AT_BOOT").write_text(why + "\n")


def jvm_app(root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "command": jvm_command(),
        "cwd": "{release_dir}",
        "instances": list(INSTANCES),
        "ready": {"http": "http://{host}:{port}/health", "timeout": BOOT_S},
        "stop": {"timeout": 20},
        "release": {"root": str(root), "keep": 5, "settle": 0.5},
        **extra,
    }


def version(port: int) -> str:
    code, body = http_get("127.0.0.1", port, "/version", timeout=10)
    assert code == 200, (code, body)
    return body.decode().strip()


def app_status(d: RunningDaemon) -> dict[str, Any]:
    result: dict[str, Any] = d.http_status()["apps"]["web"]
    return result


def assert_versions(d: RunningDaemon, ports: dict[str, int], release: str) -> None:
    """Each instance is RUNNING on ``release`` by /status, and says so itself."""
    app = app_status(d)
    assert app["release"] == release, app
    for name, port in ports.items():
        inst = app["instances"][name]
        assert (inst["state"], inst["release"]) == ("RUNNING", release), (name, inst)
        assert version(port) == release, name


def primary_serves_again(d: RunningDaemon, front: int) -> None:
    """nginx sends to the primary again: it marks a server that refused a connection
    down for fail_timeout (1 s), so a step that stops the backup right after the
    primary's restart would leave it no live upstream. An operator waits as well."""
    primary = d.pid("web", "primary")

    def answered_by_primary() -> bool:
        code, body = http_get("127.0.0.1", front, "/", timeout=10)
        return code == 200 and json.loads(body)["pid"] == primary

    d.wait_for(lambda: all(answered_by_primary() for _ in range(5)), 15, "nginx to use the primary")


def output(cp: Any) -> str:
    return f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"


# --------------------------------------------------------------------------- classic layout


# pytest-timeout's hang guard (120 s by default) for the JVM tests: each boots a dozen
# JVMs of several seconds each, about 75 s on an idle 2-core machine; the guard only
# catches a hang, every wait inside has its own deadline
JVM_TEST_GUARD = 300


@needs_jvm
@pytest.mark.skipif(WRK is None or nginx_binary() is None, reason="needs wrk and nginx")
@pytest.mark.timeout(JVM_TEST_GUARD)
def test_classic_layout_deploys_and_rolls_back_behind_nginx(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Jetty binding its own port (socket_activation: false: reload: restart), nginx in
    front with the backup marked backup: deploy, a refused deploy of a release that
    throws at boot, rollback: 0 failed requests each."""
    root = make_root(tmp_path, "v1", "v2")
    broken_release(root, "v3", "cannot read /etc/web/secrets.edn (simulated)")
    ports = {name: free_port() for name in INSTANCES}
    listen = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    d = make_daemon({"web": jvm_app(root, listen=listen, socket_activation=False)})
    d.wait_running("web", *INSTANCES, timeout=BOOT_S * 2)
    assert_versions(d, ports, "v1")
    binary = nginx_binary()
    assert binary is not None
    with Nginx(binary, tmp_path / "nginx", ports["primary"], ports["backup"]) as nginx:
        with Wrk(nginx.port, connections=4, max_seconds=180) as deploy_load:
            cp = d.supctl("deploy", "web", "v2")
        assert cp.returncode == 0, output(cp)
        assert "web:backup: restart (stop-then-start) to v2" in cp.stderr, output(cp)
        assert deploy_load.result is not None and deploy_load.result.failed == 0
        assert_versions(d, ports, "v2")
        primary_serves_again(d, nginx.port)

        before = {name: d.pid("web", name) for name in INSTANCES}
        with Wrk(nginx.port, connections=4, max_seconds=180) as broken_load:
            cp = d.supctl("deploy", "web", "v3")
        assert cp.returncode == 1, output(cp)
        text = cp.stdout + cp.stderr
        assert "IllegalStateException" in text and "boot failed: cannot read" in text, text
        assert broken_load.result is not None and broken_load.result.failed == 0
        # the primary was never touched; the backup was restarted on v2 again
        assert d.pid("web", "primary") == before["primary"]
        assert_versions(d, ports, "v2")
        assert os.readlink(root / "current") == os.path.join("releases", "v2")
        primary_serves_again(d, nginx.port)

        with Wrk(nginx.port, connections=4, max_seconds=180) as rollback_load:
            cp = d.supctl("rollback", "web")
        assert cp.returncode == 0, output(cp)
        assert rollback_load.result is not None and rollback_load.result.failed == 0
        assert_versions(d, ports, "v1")
        assert nginx.proc is not None and nginx.proc.poll() is None


# --------------------------------------------------------------------------- kept socket


def swap_events(d: RunningDaemon, label: str, kind: str) -> list[dict[str, Any]]:
    return [
        e for e in d.events("swap_finished") if e.get("instance") == label and e.get("kind") == kind
    ]


@needs_jvm
@pytest.mark.timeout(JVM_TEST_GUARD)
def test_kept_socket_on_stdin_survives_kill9_reload_deploy_pause_memory_and_hung_stop(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """socket_activation: stdin: the supervisor's socket is Jetty's inherited channel,
    shared by primary and backup; kill -9, reload and deploy under load fail nothing
    (a failure is reported with the step that was running)."""
    root = make_root(tmp_path, "v1", "v2")
    port = free_port()
    app = jvm_app(
        root,
        command=jvm_command("-Xmx1g"),
        env={"SOCKET": "stdin"},
        listen=f"127.0.0.1:{port}",
        socket_activation="stdin",
        health={"http": "http://{host}:{port}/health", "interval": 0.5, "failures": 3},
        max_memory="600MiB",
        stop={"timeout": 5},
    )
    d = make_daemon({"web": app})
    pids = d.wait_running("web", *INSTANCES, timeout=BOOT_S * 2)
    listener = os.readlink(f"/proc/{pids['primary']}/fd/0")
    assert (
        listener.startswith("socket:") and os.readlink(f"/proc/{pids['backup']}/fd/0") == listener
    )
    assert app_status(d)["release"] == "v1" and version(port) == "v1"

    with Load(port, threads=2, pause=0.0, max_seconds=280.0, timeout=30.0) as load:
        load.wait_ok(20, timeout=30)
        # kill -9 loses what the JVM had accepted and not answered: nobody can save
        # that. The promise is for what it had not accepted, so no client has a request
        # in flight (nor a connection the JVM accepted) when it dies.
        load.step = "kill -9 of the primary"

        load.quiet(lambda: kill_dead(pids["primary"]))
        load.wait_ok(20, timeout=30)
        d.wait_for(
            lambda: (
                (i := d.instance("web", "primary", fast=True))["state"] == "RUNNING"
                and i["pid"] != pids["primary"]
            ),
            BOOT_S,
            "a new primary JVM",
        )
        load.wait_ok(20, timeout=30)
        load.step = "reload"
        cp = d.supctl("reload", "web")
        assert cp.returncode == 0, output(cp)
        load.wait_ok(20, timeout=30)
        load.step = "deploy v2"
        cp = d.supctl("deploy", "web", "v2")
        assert cp.returncode == 0, output(cp)
        load.wait_ok(20, timeout=30)
    assert load.failures == [], f"failed requests by step: {load.failed_steps()}"
    assert load.releases["v1"] > 0 and load.releases["v2"] > 0, load.releases
    app_now = app_status(d)
    assert app_now["release"] == "v2" and version(port) == "v2"
    assert {i["release"] for i in app_now["instances"].values()} == {"v2"}

    # a long GC pause: the JVM is stopped longer than the liveness window; it is
    # replaced by a swap (the new one ready before the old one gets its stop signal)
    paused = d.pid("web", "primary")
    os.kill(paused, signal.SIGSTOP)
    d.wait_for(
        lambda: swap_events(d, "web:primary", "replace"), BOOT_S, "the paused JVM's replacement"
    )
    event = swap_events(d, "web:primary", "replace")[-1]
    assert event["outcome"] == "ok" and event["old_pid"] == paused, event
    assert event["ready_after_s"] <= event["retired_after_s"], event
    d.wait_for(lambda: proc_state(paused) is None, 30, "the paused JVM to be gone")
    assert version(port) == "v2"

    # max_memory on the JVM's RSS: whichever instance answered /grow is replaced
    code, body = http_get("127.0.0.1", port, "/grow?mb=500", timeout=30)
    assert code == 200, body
    grown = int(body.split()[0])

    def replaced() -> list[dict[str, Any]]:
        return [
            e
            for e in d.events("swap_finished")
            if e.get("kind") == "max_memory" and e.get("old_pid") == grown
        ]

    memory = d.wait_for(replaced, BOOT_S, "the grown JVM to be replaced")
    assert memory[-1]["outcome"] == "ok" and not pid_alive(grown), memory
    d.wait_running("web", *INSTANCES, timeout=BOOT_S)
    assert {i["release"] for i in app_status(d)["instances"].values()} == {"v2"}
    assert version(port) == "v2"

    # a shutdown hook that hangs: SIGKILL after stop.timeout (5 s)
    (root / "releases" / "v2" / "HANG_ON_STOP").write_text("")
    hung = d.pid("web", "backup")
    began = time.monotonic()
    cp = d.supctl("stop", "web:backup")
    took = time.monotonic() - began
    assert cp.returncode == 0, output(cp)
    assert not pid_alive(hung) and took >= 5.0, took
    assert d.instance("web", "backup")["exit_status"] == -signal.SIGKILL
    assert "shutdown hook: hanging" in d.log_file("web", "backup").read_text()
    (root / "releases" / "v2" / "HANG_ON_STOP").unlink()


# --------------------------------------------------------------------------- warm-up


@needs_jvm
@pytest.mark.timeout(JVM_TEST_GUARD)
def test_a_warming_jvm_leaves_the_kept_socket_alone_and_a_failed_warm_up_is_shown(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """WARMUP (docs/jvm.md, "Warm-up"): the app's connector first serves the warm-up
    command on a private port; the shared socket gets no answer from that JVM until the
    warm-up has ended. A warm-up command that fails ends the boot, and supctl's answer
    carries the app's own message."""
    root = make_root(tmp_path, "v1")
    port, other = free_port(), free_port()
    saw, gate = tmp_path / "warm-up-saw", tmp_path / "warm-up-may-end"
    warming = jvm_app(
        root,
        instances=["primary"],
        env={
            "SOCKET": "stdin",
            # the warm-up reaches the app on its private port, then waits for the test
            "WARMUP": f"curl -sf http://127.0.0.1:$WARM_PORT/version > {saw}"
            f" && while [ ! -e {gate} ]; do sleep 0.05; done",
        },
        listen=f"127.0.0.1:{port}",
        socket_activation="stdin",
    )
    failing = jvm_app(
        root,
        instances=["primary"],
        env={"SOCKET": "stdin", "WARMUP": "exit 7"},
        listen=f"127.0.0.1:{other}",
        socket_activation="stdin",
        backoff={"max_retries": 0},
    )
    d = make_daemon({"web": warming, "cold": failing})
    d.wait_for(lambda: saw.exists() and saw.read_text() == "v1\n", BOOT_S, "the warm-up's request")
    assert d.instance("web", "primary")["state"] == "STARTING"
    # the supervisor's socket takes the connection into its backlog; no JVM accepts it
    with pytest.raises(TimeoutError):
        http_get("127.0.0.1", port, "/version", timeout=2)
    gate.touch()
    d.wait_running("web", "primary", timeout=BOOT_S)
    assert version(port) == "v1"
    assert "warmed up in" in d.log_file("web", "primary").read_text()

    d.wait_state("cold", "primary", "FATAL", timeout=BOOT_S)
    cp = d.supctl("start", "cold")
    assert cp.returncode == 1, output(cp)
    assert "app.clj: the warm-up command exited with 7: exit 7" in cp.stdout + cp.stderr
