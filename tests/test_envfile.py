"""``env_file:``: the EnvironmentFile= parser (pure), its config key and --check, and a
real daemon whose children get the values, which never reach state.json or the log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DaemonFactory
from helpers import REPO, app_cmd, free_port

from supervisord_lite.config.parser import parse_config
from supervisord_lite.host import envfile
from supervisord_lite.host.envfile import EnvFileError

SECRET = "s3cr3t-Value-4711"  # must never show up outside the child's environment


def parse(text: str) -> dict[str, str]:
    return envfile.parse(text, "/etc/web.env")


# --------------------------------------------------------------------------- parser


def test_plain_assignments_comments_and_blanks() -> None:
    """KEY=value lines; #/; comments, blank lines, blanks around the key and value."""
    text = "# a comment\n\n; another\nA=1\n  B = two words  \nC=\n   # indented comment\nD=x#y\n"
    assert parse(text) == {"A": "1", "B": "two words", "C": "", "D": "x#y"}


def test_later_assignment_wins() -> None:
    assert parse("A=1\nA=2\n") == {"A": "2"}


def test_single_quotes_are_literal_and_may_span_lines() -> None:
    text = "A='  $HOME \\n \"x\"  '\nB='line one\nline two'\nC=after\n"
    assert parse(text) == {
        "A": '  $HOME \\n "x"  ',
        "B": "line one\nline two",
        "C": "after",
    }


def test_double_quotes_know_four_escapes_and_continuations() -> None:
    text = 'A="say \\"hi\\" \\\\ \\$X \\` \\n"\nB="one \\\ntwo"\nC="a"b\'c\'\n'
    assert parse(text) == {"A": 'say "hi" \\ $X ` \\n', "B": "one two", "C": "abc"}


def test_unquoted_backslash_escapes_and_continues() -> None:
    text = "A=one\\\n two\nB=a\\ \\ \nC=x\\#y\n"
    assert parse(text) == {"A": "one two", "B": "a  ", "C": "x#y"}


def test_comment_continued_by_a_backslash() -> None:
    """systemd continues a comment that ends in a backslash; so do we."""
    assert parse("# note \\\nNOT_A_KEY=1\nA=2\n") == {"A": "2"}


def test_crlf_line_ends() -> None:
    assert parse("A=1\r\nB='x'\r\n") == {"A": "1", "B": "x"}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("A=1\nnot an assignment\n", 2, "expected KEY=value"),
        ("A=1\n\n1BAD=x\n", 3, "invalid variable name"),
        ("export A=1\n", 1, "no `export`"),
        (f"A=1\nB='{SECRET}\nC=2\n", 2, "unterminated single quote"),
        (f'A="ok"\n\nB="{SECRET}\\"\n', 3, "unterminated double quote"),
        (f"A={SECRET}\0\n", 1, "NUL"),
        ("=value\n", 1, "invalid variable name"),
        (f"{SECRET} and more\n", 1, "expected KEY=value"),
        (f"{SECRET}=1\n", 1, "invalid variable name"),
    ],
)
def test_errors_name_file_and_line_never_the_value(text: str, line: int, reason: str) -> None:
    with pytest.raises(EnvFileError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"/etc/web.env:{line}: "), message
    assert reason in message
    assert SECRET not in message
    assert "1BAD" not in message and "and more" not in message  # nothing of the file


def _load(setting: str) -> dict[str, str]:
    text = f"apps:\n  web:\n    command: [true]\n    env_file: {json.dumps(setting)}\n"
    cfg = parse_config(text).apps["web"]

    async def load() -> dict[str, str]:
        return await envfile.load(cfg, asyncio.get_running_loop())

    return asyncio.run(load())


def test_load_required_optional_and_unreadable(tmp_path: Path) -> None:
    """A missing file is an error unless the path starts with '-'; a bad optional one
    is still an error (only absence is forgiven, as with systemd)."""
    missing = tmp_path / "nope.env"
    with pytest.raises(EnvFileError, match=rf"^{missing}: cannot read env_file"):
        _load(str(missing))
    assert _load(f"-{missing}") == {}
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nB\n")
    with pytest.raises(EnvFileError, match=rf"^{bad}:2: "):
        _load(f"-{bad}")
    bad.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(EnvFileError, match=rf"^{bad}:2: env_file is not UTF-8"):
        _load(str(bad))


def test_digest_changes_with_values_only() -> None:
    assert envfile.digest({"A": "1", "B": "2"}) == envfile.digest({"B": "2", "A": "1"})
    assert envfile.digest({"A": "1"}) != envfile.digest({"A": "2"})
    assert SECRET not in envfile.digest({"A": SECRET})


# --------------------------------------------------------------------------- config


def test_config_key_resolves_relative_paths_and_keeps_the_dash(tmp_path: Path) -> None:
    text = (
        "apps:\n"
        "  a: {command: [sleep, '9'], env_file: web.env}\n"
        "  b: {command: [sleep, '9'], env_file: -/etc/opt.env}\n"
        "  c: {command: [sleep, '9'], env_file: -rel/opt.env}\n"
        "  d: {command: [sleep, '9']}\n"
    )
    cfg = parse_config(text, str(tmp_path / "conf.yaml"))
    assert cfg.apps["a"].env_file == str(tmp_path / "web.env")
    assert cfg.apps["b"].env_file == "-/etc/opt.env"
    assert cfg.apps["c"].env_file == f"-{tmp_path}/rel/opt.env"
    assert cfg.apps["d"].env_file is None


def test_config_rejects_an_empty_path() -> None:
    with pytest.raises(Exception, match=r"<config>:2: apps.a.env_file: must be"):
        parse_config("apps:\n  a: {command: [sleep, '9'], env_file: '-'}\n")


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisord_lite.cli", "-c", str(config), "--check"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=60,
        check=False,
    )


def test_check_reports_a_bad_env_file_with_file_and_line(tmp_path: Path) -> None:
    """`--check` reads every env_file: a bad one is exit 2 naming its file:line."""
    env = tmp_path / "web.env"
    env.write_text(f"GOOD={SECRET}\n\nthis line is wrong\n")
    config = tmp_path / "conf.yaml"
    config.write_text(f"apps:\n  web: {{command: [sleep, '9'], env_file: {env}}}\n")
    cp = check(config)
    assert cp.returncode == 2, cp.stderr
    assert f"{env}:3: expected KEY=value" in cp.stderr
    assert SECRET not in cp.stderr + cp.stdout
    env.write_text("GOOD=1\n")
    assert check(config).returncode == 0
    config.write_text(f"apps:\n  web: {{command: [sleep, '9'], env_file: -{env}.missing}}\n")
    assert check(config).returncode == 0


# --------------------------------------------------------------------------- e2e


def replace_file(path: Path, text: str) -> None:
    """Change a file the way an operator's tools do, in one rename: the daemon re-reads
    it at each respawn, and a write in place could be read half done (empty)."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def test_child_sees_the_values_which_stay_out_of_state_and_log(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The child gets the file's variables (env: wins over them); state.json keeps the
    path only, the daemon's log never a value; a file broken since makes the next spawn
    fail with file:line (BACKOFF), and fixing it lets the retry start."""
    env = tmp_path / "web.env"
    env.write_text(f"# credentials\nDB_PASSWORD='{SECRET}'\nOVERRIDE=from-file\n")
    report = tmp_path / "env-{generation}.json"
    app = {
        **app_cmd(ENV_FILE=report, OVERRIDE="from-env"),
        "listen": f"127.0.0.1:{free_port()}",
        "env_file": str(env),
        "backoff": {"initial": 0.2, "max": 0.5},
    }
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    seen = json.loads((tmp_path / "env-1.json").read_text())
    assert seen["pid"] == pid
    assert seen["env"]["DB_PASSWORD"] == SECRET
    assert seen["env"]["OVERRIDE"] == "from-env"

    # the durable record (state.json and its journal) names the process and the file,
    # never a value from it
    record = "".join(p.read_text() for p in d.state_dir.glob("*") if p.is_file())
    assert f'"pid":{pid}' in record
    assert str(env) in record
    assert SECRET not in record

    replace_file(env, f"DB_PASSWORD='{SECRET}\n")  # unterminated since
    os.kill(pid, 9)
    info = d.wait_state("web", "primary", ("BACKOFF", "FATAL"), 10)
    assert f"{env}:1: unterminated single quote" in (info["last_error"] or ""), info
    cp = d.supctl("status")  # not everything that should run runs: exit 5, named
    assert cp.returncode == 5 and "not running as it should: web:primary" in cp.stderr, cp
    replace_file(env, f"DB_PASSWORD={SECRET}-2\n")
    now = d.wait_state("web", "primary", "RUNNING", 10)
    d.supctl_ok("status")
    last = json.loads((tmp_path / f"env-{now['generation']}.json").read_text())
    assert last["pid"] == now["pid"] and last["env"]["DB_PASSWORD"] == f"{SECRET}-2"
    assert SECRET not in d.output()
    assert SECRET not in "".join(p.read_text() for p in d.state_dir.glob("*") if p.is_file())


def test_update_swaps_on_changed_contents_and_refuses_a_bad_file(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """`update` re-reads env files: changed contents hot-swap the app (the plan names
    `env_file (contents)`, no value); a bad file is exit 2 with file:line, nothing changed."""
    env = tmp_path / "web.env"
    env.write_text("COLOUR=red\n")
    report = tmp_path / "env-{generation}.json"
    app = {**app_cmd(ENV_FILE=report), "listen": f"127.0.0.1:{free_port()}", "env_file": f"-{env}"}
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    cp = d.supctl("plan")
    assert cp.returncode == 0, cp.stdout + cp.stderr

    env.write_text(f"COLOUR=blue\nTOKEN={SECRET}\n")
    cp = d.supctl("plan", json_output=True)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    plan = json.loads(cp.stdout.splitlines()[-1])["result"]
    assert plan["swapped"] == ["web"]
    assert plan["apps"]["web"]["keys"] == ["env_file (contents)"]
    assert SECRET not in cp.stdout
    d.supctl_ok("update")
    info = d.wait_state("web", "primary", "RUNNING", 10)
    assert info["pid"] != pid and info["generation"] == 2
    assert json.loads((tmp_path / "env-2.json").read_text())["env"]["COLOUR"] == "blue"
    assert d.supctl("plan").returncode == 0  # applied: nothing left to do

    env.write_text("COLOUR=green\nbroken\n")
    cp = d.supctl("update")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert f"{env}:2: expected KEY=value" in cp.stderr
    assert d.instance("web", "primary")["pid"] == info["pid"]
    assert SECRET not in d.output()
