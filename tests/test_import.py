"""``supervisord-lite import``: the corpus against its golden files, the output run for real,
and bad input.

Each directory of ``tests/import_corpus`` is one sample: the source files, ``args``
(the import's arguments), and the golden ``expected.yaml`` (stdout), ``expected.report``
(stderr) and ``expected.exit``. A sample is copied to a fresh directory first, with
``@ROOT@`` in its files replaced by that directory and ``@APPS@`` by ``tests/apps``;
the outputs are compared with those two put back. ``SUPERVISORD_LITE_REGEN_GOLDEN=1``
rewrites the golden files (review the diff).

The run test starts each imported config under a real daemon and waits for every
instance to be RUNNING (``supctl status`` exit 0). gunicorn and uvicorn run for real
(from this venv). The one mock: programs that are not installed here (celery, uwsgi,
bundle, node, npm, java, php-fpm) are small stand-in executables of those names put
first on PATH; a stand-in listens on ``$PORT`` when it is set, sends ``READY=1`` and
``WATCHDOG=1`` when it has a ``NOTIFY_SOCKET``, and otherwise waits to be stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import DaemonFactory
from helpers import APPS_DIR, PYTHON, REPO, free_port

CORPUS = Path(__file__).resolve().parent / "import_corpus"
SAMPLES = sorted(p.name for p in CORPUS.iterdir() if (p / "args").exists())
REGEN = os.environ.get("SUPERVISORD_LITE_REGEN_GOLDEN") == "1"
IMPORT_ENV = {"APP_ROOT": "/opt/app"}  # what %(ENV_APP_ROOT)s expands to
STAND_INS = ("celery", "uwsgi", "bundle", "node", "npm", "java", "php-fpm")
VENV_BIN = str(Path(sys.executable).parent)
STAND_IN = """#!/usr/bin/python3
# stand-in for a program not installed on the test machine (see test_import.py)
import os, signal, socket, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
server = None
if os.environ.get("PORT"):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(os.environ["PORT"])))
    server.listen(16)
    server.settimeout(0.5)
notify = os.environ.get("NOTIFY_SOCKET")
def tell(text):
    if notify:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(text, "\\0" + notify[1:] if notify.startswith("@") else notify)
        s.close()
tell(b"READY=1")
while True:
    if server is not None:
        try:
            server.accept()[0].close()
        except socket.timeout:
            pass
    else:
        time.sleep(0.5)
    tell(b"WATCHDOG=1")
"""


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory other users can enter (apps of the corpus run as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="import-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _stage(sample: str, root: Path) -> Path:
    work = root / sample
    shutil.copytree(CORPUS / sample, work, ignore=shutil.ignore_patterns("expected.*"))
    for path in work.rglob("*"):
        if path.is_file():
            text = path.read_text()
            path.write_text(text.replace("@ROOT@", str(work)).replace("@APPS@", str(APPS_DIR)))
        (path.chmod(0o755) if path.is_dir() else path.chmod(0o644))
    work.chmod(0o755)
    return work


def run_import(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **IMPORT_ENV}
    return subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "import", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _normal(text: str, work: Path) -> str:
    return text.replace(str(work), "@ROOT@").replace(str(APPS_DIR), "@APPS@")


def _args(sample: str) -> list[str]:
    return (CORPUS / sample / "args").read_text().split()


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_matches_its_golden_files_and_passes_check(sample: str, root: Path) -> None:
    work = _stage(sample, root)
    done = run_import(_args(sample), work)
    assert done.returncode in (0, 1), done.stderr
    got = {
        "expected.yaml": _normal(done.stdout, work),
        "expected.report": _normal(done.stderr, work),
        "expected.exit": f"{done.returncode}\n",
    }
    for name, text in got.items():
        golden = CORPUS / sample / name
        if REGEN:
            golden.write_text(text)
        assert text == golden.read_text(), f"{sample}/{name} differs"
    config = work / "imported.yaml"
    config.write_text(done.stdout)
    check = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "-c", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("sample", SAMPLES)
def test_imported_sample_runs_under_the_daemon(
    sample: str, root: Path, make_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _stage(sample, root)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    for name in STAND_INS:
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    port_base = free_port()
    done = run_import([f"--port-base={port_base}", *_args(sample)], work)
    assert done.returncode in (0, 1), done.stderr
    apps = yaml.safe_load(done.stdout)["apps"]
    monkeypatch.setenv("PATH", f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}")
    daemon = make_daemon(apps)
    for name, app in apps.items():
        count = app.get("instances", ["primary"])
        instances = [str(i) for i in range(count)] if isinstance(count, int) else count
        daemon.wait_running(name, *instances, timeout=60)
    status = daemon.supctl("status")
    assert status.returncode == 0, status.stdout + status.stderr


BAD_INPUT = {
    "binary": ("supervisord.conf", b"[program:x]\ncommand=a\n\x00\x01\x02", 3, "binary"),
    "no command": ("supervisord.conf", b"[program:web]\n\ndirectory=/srv\n", 1, "no command"),
    "no ExecStart": (
        "web.service",
        b"[Unit]\nDescription=x\n\n[Service]\nUser=nobody\n",
        4,
        "no ExecStart",
    ),
    "ExecStart reset": (
        "web.service",
        b"[Service]\nExecStart=/bin/true\nExecStart=\n",
        1,
        "no ExecStart",
    ),
    "unterminated quote": ("web.service", b'[Service]\nExecStart=/bin/echo "a\n', 2, "quote"),
    "no equals": ("web.service", b"[Service]\nExecStart=/bin/true\nbogus line\n", 3, "Key=Value"),
    "not UTF-8": ("Procfile", b"web: echo \xff\n", 1, "UTF-8"),
    "procfile garbage": ("Procfile", b"web: run\nthis is not a process\n", 2, "type: command"),
    "procfile empty command": ("Procfile", b"web: run\nworker:\n", 2, "no command"),
    "unknown expansion": ("s.conf", b"[program:x]\ncommand=run %(nope)s\n", 2, "%(nope)s"),
    "missing ENV": ("s.conf", b"[program:x]\ncommand=run %(ENV_NOT_SET_HERE)s\n", 2, "ENV_"),
    "bad boolean": ("s.conf", b"[program:x]\ncommand=run\nautostart=perhaps\n", 3, "boolean"),
    "bad environment": ("s.conf", b"[program:x]\ncommand=run\nenvironment=A=1,B\n", 3, "KEY="),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_exit_2_with_file_and_line_and_nothing_on_stdout(
    case: str, tmp_path: Path
) -> None:
    name, content, line, words = BAD_INPUT[case]
    (tmp_path / name).write_bytes(content)
    done = run_import([name], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert f"{name}:{line}: " in done.stderr, done.stderr
    assert words in done.stderr


def test_include_loop_names_the_files_line_that_closes_it(tmp_path: Path) -> None:
    (tmp_path / "main.conf").write_text("[include]\nfiles = a.conf\n[program:x]\ncommand=run\n")
    (tmp_path / "a.conf").write_text("[program:y]\ncommand=run\n\n[include]\nfiles=main.conf\n")
    done = run_import(["main.conf"], tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "a.conf:5: include loop" in done.stderr, done.stderr


def test_include_relative_to_the_including_file_and_unmatched_glob(tmp_path: Path) -> None:
    (tmp_path / "etc" / "conf.d").mkdir(parents=True)
    (tmp_path / "etc" / "main.conf").write_text("[include]\nfiles=conf.d/*.conf\n")
    (tmp_path / "etc" / "conf.d" / "a.conf").write_text("[program:a]\ncommand=run a\n")
    done = run_import(["etc/main.conf"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "etc/conf.d/a.conf:2: mapped: [program:a] command=run a" in done.stderr
    (tmp_path / "etc" / "main.conf").write_text("[include]\nfiles=missing/*.conf\n")
    done = run_import(["etc/main.conf"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert "etc/main.conf:2: " in done.stderr and "no file matches" in done.stderr


def test_a_fully_mapped_program_exits_0(tmp_path: Path) -> None:
    (tmp_path / "s.conf").write_text(
        "[program:app]\ncommand=sleep 60\nautorestart=true\nstartretries=2\nstopwaitsecs=5\n"
    )
    done = run_import(["s.conf"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "summary: 4 mapped, 0 approximated, 0 not mapped" in done.stderr


def test_an_unknown_format_asks_for_from_and_from_overrides_the_guess(tmp_path: Path) -> None:
    (tmp_path / "apps.txt").write_text("just some text\n")
    done = run_import(["apps.txt"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert "--from" in done.stderr
    (tmp_path / "apps.txt").write_text("web: sleep 60\n")
    done = run_import(["--from", "procfile", "apps.txt"], tmp_path)
    assert done.returncode == 1, done.stderr  # web: taken to listen on $PORT


def test_the_import_subcommand_leaves_the_other_options_working(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "import" in done.stdout
    done = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "import", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0 and "--from" in done.stdout
