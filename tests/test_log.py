"""The daemon's log (log.py, structlog): formats, levels, bound context, tracebacks.

Each case runs ``log`` in a fresh interpreter whose stderr is a real pipe or a real
pseudo-terminal, as the daemon's is under systemd or in a shell; one case runs the
daemon itself with ``log: {format: console, level: warning}``.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import REPO, py_app, running_daemon, wait_until

DEADLINE = 10.0

# a program's lines: configure, then log; its stderr is what is checked
PRELUDE = "from supervisord_lite import log\n"


def run_logging(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` after ``from supervisord_lite import log``, stderr on a pipe."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )


def run_on_terminal(code: str) -> str:
    """``code`` with stderr on a pseudo-terminal; what the terminal showed."""
    main, side = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + code],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=side,
        )
    finally:
        os.close(side)
    out = b""
    deadline = time.monotonic() + DEADLINE * 3
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=DEADLINE) == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return out.decode()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_json_lines_carry_fields_bound_context_level_and_timestamp() -> None:
    """Off a terminal (``auto``), one JSON object a line: the call's fields, what the
    logger has bound, ``event``, ``level`` and an ISO 8601 UTC ``timestamp``."""
    cp = run_logging(
        "log.configure('auto', 'info')\n"
        "web = log.get_logger('instance').bind(instance='web:primary')\n"
        "web.info('spawned', pid=42, generation=3)\n"
        "web.warning('health_check_failed', detail='refused', consecutive=1)\n"
    )
    assert cp.returncode == 0, cp.stderr
    first, second = json_lines(cp.stderr)
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    del first["timestamp"], second["timestamp"]
    assert first == {
        "instance": "web:primary",
        "pid": 42,
        "generation": 3,
        "event": "spawned",
        "level": "info",
    }
    assert second == {
        "instance": "web:primary",
        "detail": "refused",
        "consecutive": 1,
        "event": "health_check_failed",
        "level": "warning",
    }


def test_level_filters_and_reaches_loggers_used_before_configure() -> None:
    """``log.level`` drops what is below it, also for a logger that logged before the
    daemon configured the log (loggers are cached only once configured)."""
    cp = run_logging(
        "early = log.get_logger('early')\n"
        "early.info('before_configure')\n"
        "log.configure('json', 'warning')\n"
        "early.info('dropped')\n"
        "early.warning('kept')\n"
        "early.info('dropped_again')\n"
        "log.get_logger('late').debug('dropped_too')\n"
        "log.get_logger('late').error('kept_too')\n"
    )
    assert cp.returncode == 0, cp.stderr
    events = [(e["event"], e["level"]) for e in json_lines(cp.stderr)]
    assert events == [("before_configure", "info"), ("kept", "warning"), ("kept_too", "error")]


def test_exception_is_rendered_once() -> None:
    """``log.exception`` puts the traceback in the line once: the string ``exception``
    in JSON (no ``exc_info`` left), under the line in the console rendering."""
    code = (
        "log.configure({fmt!r}, 'info')\n"
        "try:\n"
        "    raise ValueError('the cause 1234')\n"
        "except ValueError:\n"
        "    log.get_logger('x').exception('instance_internal_error', instance='a:b')\n"
    )
    cp = run_logging(code.format(fmt="json"))
    assert cp.returncode == 0, cp.stderr
    (line,) = json_lines(cp.stderr)
    assert line["event"] == "instance_internal_error" and line["level"] == "error"
    assert "exc_info" not in line
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].count("ValueError: the cause 1234") == 1
    console = run_logging(code.format(fmt="console"))
    assert console.returncode == 0, console.stderr
    assert console.stderr.count("the cause 1234") == 1, console.stderr
    assert console.stderr.count("Traceback") <= 1, console.stderr


def test_console_on_a_terminal_is_coloured_and_plain_elsewhere() -> None:
    """``auto`` on a terminal and ``console`` anywhere render structlog's console
    lines (``[level] event key=value``); colours only on a terminal."""
    shown = run_on_terminal(
        "log.configure('auto', 'info')\nlog.get_logger('d').info('ready', apps=2)\n"
    )
    assert "\x1b[" in shown and "ready" in shown and "apps" in shown, repr(shown)
    assert not shown.lstrip().startswith("{")
    plain = run_logging(
        "log.configure('console', 'info')\nlog.get_logger('d').info('ready', apps=2)\n"
    )
    assert plain.returncode == 0, plain.stderr
    assert "\x1b[" not in plain.stderr
    (line,) = plain.stderr.splitlines()
    assert "[info     ] ready" in line and line.endswith("apps=2"), line


def test_a_closed_stderr_drops_lines_instead_of_failing_the_caller() -> None:
    """The daemon's work never fails for its log: with stderr gone, a log call returns."""
    cp = run_logging(
        "import os, sys\n"
        "log.configure('json', 'info')\n"
        "os.close(2)\n"
        "log.get_logger('d').error('nobody_reads_this')\n"
        "sys.stdout.write('still here')\n"
    )
    assert cp.returncode == 0
    assert cp.stdout == "still here"


def test_the_daemon_logs_in_its_configured_format_and_level(tmp_path: Path) -> None:
    """``log: {format: console, level: warning}``: the daemon's own lines are console
    lines (no JSON, no colours off a terminal) and only warnings and errors, each
    instance's naming it."""
    crashing = {**py_app("import sys; sys.exit(3)"), "ready": {"delay": 0.5}}
    with running_daemon(
        tmp_path,
        {"crashy": crashing},
        supervisor={"log": {"format": "console", "level": "warning"}},
        http=False,
    ) as d:
        wait_until(lambda: "instance_failed" in d.output(), DEADLINE, "a failure logged")
    lines = [line for line in d.output().splitlines() if "] " in line]
    failed = [line for line in lines if "instance_failed" in line]
    assert failed and all("[warning  ]" in line for line in failed), lines
    assert all("instance=crashy:primary" in line for line in failed), failed
    assert not any("[info" in line or "[debug" in line for line in lines), lines
    assert not any(line.startswith("{") for line in d.output().splitlines())
    assert "\x1b[" not in d.output()
