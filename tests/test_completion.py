"""``supctl completion bash|zsh``: the generated scripts, run by real shells.

Each test sources the script that this checkout's supctl prints into a real bash (or
zsh), sets the completion variables the shell would set on Tab, calls ``_supctl`` and
reads what it offers. App and instance names come from a real control server (the
FakeAPI of test_control: web:primary, web:backup, worker:0, ...) through a real
``supctl --json status``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_control import DEADLINE, FakeAPI, ServerThread

from supervisord_lite.control.commands import COMMANDS, LOCAL_COMMANDS
from supervisord_lite.control.commands.spec import ArgKind, ArgSpec, CommandSpec
from supervisord_lite.supctl import completion

REPO = Path(__file__).resolve().parents[1]
ALL_COMMANDS = [*COMMANDS, *LOCAL_COMMANDS]
FAKE_NAMES = {"web", "worker"}  # the apps in the fake's status


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(str(tmp_path / "supctl.sock"), FakeAPI()) as srv:
        yield srv


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a ``supctl`` that runs this checkout, first on the shells' PATH,
    and the scripts it prints (``supctl.bash``, ``supctl.zsh``), made once."""
    bindir = tmp_path_factory.mktemp("bin")
    wrapper = bindir / "supctl"
    wrapper.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m supervisord_lite.supctl "$@"\n'
    )
    wrapper.chmod(0o755)
    for shell in completion.SHELLS:
        with open(bindir / f"supctl.{shell}", "w") as out:
            subprocess.run(
                [wrapper, "completion", shell], stdout=out, timeout=DEADLINE * 3, check=True
            )
    return bindir


def shell_env(bindir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SUPCTL_SOCKET", "NO_COLOR")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_shell(argv: list[str], script: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [*argv, script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def bash_complete(
    bindir: Path,
    *words: str,
    line: bool = False,
    env: dict[str, str] | None = None,
    source: str = "source supctl.bash",
) -> list[str]:
    """What ``_supctl`` offers for ``words`` (the last one is being typed).

    ``line=True`` sets COMP_LINE/COMP_POINT as bash does on Tab (bash then also
    splits COMP_WORDS at colons, which the script must undo).
    """
    quoted = " ".join(shlex.quote(w) for w in words)
    if line:
        setup = f"COMP_LINE={shlex.quote(' '.join(words))}; COMP_POINT=${{#COMP_LINE}};"
    else:
        setup = f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1};"
    script = (
        f"{source} || exit 9\n"
        f'{setup} _supctl; for w in "${{COMPREPLY[@]}}"; do printf "%s\\n" "$w"; done'
    )
    env_ = shell_env(bindir, **(env or {}))
    return run_shell(["bash", "--norc", "--noprofile", "-c"], script, env_, bindir).splitlines()


def test_bash_completes_commands_from_the_registry(bindir: Path) -> None:
    """Every registered command (and only those) is offered; a prefix narrows them."""
    # As a user's ~/.bashrc would load it:
    assert bash_complete(bindir, "supctl", "", source="source <(supctl completion bash)") == (
        ALL_COMMANDS
    )
    assert bash_complete(bindir, "supctl", "st") == [c for c in ALL_COMMANDS if c.startswith("st")]
    assert bash_complete(bindir, "supctl", "--json", "comp") == ["completion"]


def test_bash_completes_options(bindir: Path) -> None:
    """Options come from the registry's flags, plus supctl's own; values are skipped."""
    assert set(bash_complete(bindir, "supctl", "status", "--")) == {
        "--socket",
        "--json",
        "--raw",
        "--help",
        "--watch",
    }
    assert {"-f", "--follow", "-n", "--lines"} <= set(bash_complete(bindir, "supctl", "logs", "-"))
    assert bash_complete(bindir, "supctl", "logs", "-n", "") == []  # a number: no guesses
    assert bash_complete(bindir, "supctl", "completion", "") == list(completion.SHELLS)
    signals = bash_complete(bindir, "supctl", "signal", "web", "")
    assert {"HUP", "TERM", "USR1", "KILL"} <= set(signals)
    assert bash_complete(bindir, "supctl", "signal", "web", "US") == ["USR1", "USR2"]


def test_bash_completes_names_from_the_daemon(bindir: Path, server: ServerThread) -> None:
    """Apps and APP:INSTANCE come from the running daemon named by -s or $SUPCTL_SOCKET."""
    targets = bash_complete(bindir, "supctl", "-s", server.path, "start", "")
    assert {"web", "web:primary", "web:backup", "worker", "worker:0"} <= set(targets)
    assert set(bash_complete(bindir, "supctl", f"--socket={server.path}", "promote", "")) == (
        FAKE_NAMES
    )
    # reload takes any number of apps; -n's value is not a positional
    env = {"SUPCTL_SOCKET": server.path}
    assert set(bash_complete(bindir, "supctl", "reload", "web", "w", env=env)) == {"web", "worker"}
    assert bash_complete(bindir, "supctl", "logs", "-n", "5", "worker:", env=env) == ["worker:0"]
    # deploy APP RELEASE: no guesses for the release
    assert bash_complete(bindir, "supctl", "deploy", "web", "", env=env) == []


def test_bash_on_tab_completes_after_the_colon(bindir: Path, server: ServerThread) -> None:
    """As bash calls it (COMP_LINE, colon in COMP_WORDBREAKS), only the part after
    ``APP:`` is replaced, so the candidates are the instance names."""
    offered = bash_complete(bindir, "supctl", "-s", server.path, "stop", "web:", line=True)
    assert sorted(offered) == ["backup", "primary"]
    offered = bash_complete(bindir, "supctl", "-s", server.path, "stop", "web:p", line=True)
    assert offered == ["primary"]
    offered = bash_complete(bindir, "supctl", "-s", server.path, "stop", "wo", line=True)
    assert sorted(offered) == ["worker", "worker:0"]


def test_bash_offers_nothing_without_a_daemon(bindir: Path, tmp_path: Path) -> None:
    """No daemon: no names, no error output, a zero exit (checked by run_shell)."""
    missing = str(tmp_path / "nothing-here.sock")
    assert bash_complete(bindir, "supctl", "-s", missing, "start", "") == []


def test_bash_gives_up_on_a_daemon_that_does_not_answer(bindir: Path, tmp_path: Path) -> None:
    """A socket that accepts and never answers costs the short timeout, not a hung shell."""
    if shutil.which("timeout") is None:
        pytest.skip("coreutils' timeout is not installed")
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(8)  # the kernel completes connects; nobody ever reads or answers
        assert bash_complete(bindir, "supctl", "-s", path, "stop", "") == []


def test_script_is_derived_from_the_registry() -> None:
    """A command added to the registry completes without touching completion.py."""
    extra = CommandSpec(
        "frobnicate",
        "a command that does not exist",
        (ArgSpec("target", ArgKind.TARGET, "what", flags=()),),
    )
    script = completion.script("bash", [*COMMANDS.values(), extra], "/x/python")
    assert "frobnicate) options=(); kinds=(target) ;;" in script
    assert "local py=/x/python" in script


def test_global_options_match_supctl() -> None:
    """completion.py's copy of supctl's own options is what supctl --help lists."""
    result = subprocess.run(
        [sys.executable, "-m", "supervisord_lite.supctl", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=True,
    )
    option_lines = re.findall(r"^  (-.*)$", result.stdout, re.MULTILINE)
    listed = {word for line in option_lines for word in re.findall(r"(?<!\S)--?\w[-\w]*", line)}
    assert listed == {*completion.GLOBAL_VALUE_OPTIONS, *completion.GLOBAL_FLAGS}


def test_unknown_shell_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisord_lite.supctl", "completion", "fish"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown shell 'fish'" in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------- zsh

needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")

# compadd only works inside a completion widget; a function of the same name (which
# zsh prefers to the builtin) prints what the script would have offered.
_ZSH_HARNESS = """
compadd() {{ while (( $# )) && [[ $1 != -- ]]; do shift; done; shift; print -rl -- "$@" }}
_files() {{ print -r -- "<files>" }}
{source} || exit 9
words=({words}); CURRENT={current}
_supctl || true  # non-zero means "no matches" to zsh
"""


def zsh_complete(
    bindir: Path,
    *words: str,
    env: dict[str, str] | None = None,
    source: str = "source supctl.zsh",
) -> list[str]:
    script = _ZSH_HARNESS.format(
        words=" ".join(shlex.quote(w) for w in words), current=len(words), source=source
    )
    return run_shell(
        ["zsh", "-f", "-c"], script, shell_env(bindir, **(env or {})), bindir
    ).splitlines()


@needs_zsh
def test_zsh_completes_commands_options_and_names(bindir: Path, server: ServerThread) -> None:
    """The zsh script offers the same words as the bash one (zsh filters by prefix)."""
    assert zsh_complete(bindir, "supctl", "", source="source <(supctl completion zsh)") == (
        ALL_COMMANDS
    )
    assert "--watch" in zsh_complete(bindir, "supctl", "status", "-")
    assert zsh_complete(bindir, "supctl", "-s", "") == ["<files>"]
    targets = zsh_complete(bindir, "supctl", "-s", server.path, "restart", "web:")
    assert {"web", "web:primary", "web:backup", "worker:0"} <= set(targets)
    env = {"SUPCTL_SOCKET": server.path}
    assert set(zsh_complete(bindir, "supctl", "reload", "web", "", env=env)) == FAKE_NAMES
    assert zsh_complete(bindir, "supctl", "logs", "-n", "", env=env) == []
    assert "HUP" in zsh_complete(bindir, "supctl", "signal", "web", "", env=env)
    assert zsh_complete(bindir, "supctl", "completion", "", env=env) == list(completion.SHELLS)


@needs_zsh
def test_zsh_offers_nothing_without_a_daemon(bindir: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing-here.sock")
    assert zsh_complete(bindir, "supctl", "-s", missing, "start", "") == []
