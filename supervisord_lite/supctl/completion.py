"""Shell completion scripts for ``supctl``: ``supctl completion bash|zsh``.

Owns the generated scripts and nothing else. Commands, their options and what each
positional argument is (an app, ``APP:INSTANCE``, a signal, one of its declared
choices) come from the command registry (:mod:`commands`), and supctl's own options
from :mod:`.args`, so a new command completes without touching this module.
App and instance names come from the running daemon: the script runs ``supctl
--json status`` (with a short timeout, errors hidden) and offers nothing when the
daemon cannot be reached. Names are filtered to the config's name
alphabet before they reach the shell, so a daemon answer can never inject words.

Standard library only: ``supctl`` imports this module when asked for a script.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Iterable

from ..control.commands import COMMANDS, LOCAL_COMMANDS
from ..control.commands.completion import SHELLS
from ..control.commands.spec import ArgKind, ArgSpec, CommandSpec
from ..errors import UsageError
from .args import FLAG_OPTIONS, SOCKET_OPTIONS

__all__ = ["GLOBAL_FLAGS", "GLOBAL_VALUE_OPTIONS", "SHELLS", "registered", "script"]

#: supctl's own options (its parser adds them before and after every command);
#: tests/test_completion.py checks these against ``supctl --help``.
GLOBAL_VALUE_OPTIONS = SOCKET_OPTIONS
GLOBAL_FLAGS = (*FLAG_OPTIONS, "-h", "--help")

#: How long the script waits for the daemon before offering no names.
NAMES_TIMEOUT_S = 2

# Reads `supctl --json status` on stdin; prints app names, or (argv[1] == "targets")
# app names and APP:INSTANCE. Anything that is not a well-formed name is dropped.
_PARSER = """\
import json, re, sys
ok = re.compile(r"[A-Za-z0-9_.-]+").fullmatch
for line in sys.stdin:
    try:
        apps = json.loads(line)["result"]["apps"]
        for app, info in apps.items():
            if ok(app):
                print(app)
                if sys.argv[1:] == ["targets"]:
                    for inst in info.get("instances") or {}:
                        if ok(inst):
                            print(app + ":" + inst)
    except Exception:
        continue
"""


def _signals() -> list[str]:
    names = [s.name.removeprefix("SIG") for s in signal.Signals]
    return [n for n in names if not n.startswith("RT")]


def registered() -> list[CommandSpec]:
    """Every command supctl knows: the daemon's, then its own."""
    return [*COMMANDS.values(), *LOCAL_COMMANDS.values()]


def _kind(command: str, arg: ArgSpec) -> str:
    """The word class of a positional: app, apps (repeats), target, signal, a
    ``choice_COMMAND_ARG`` of its declared choices, or none."""
    if arg.choices:
        return f"choice_{command}_{arg.name}"
    if arg.kind in (ArgKind.APP, ArgKind.APPS, ArgKind.TARGET, ArgKind.SIGNAL):
        return arg.kind.value
    return "none"


def _tables(
    commands: Iterable[CommandSpec],
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Command names; per command a shell case arm (options, positional kinds); value
    options; a case arm per positional with choices."""
    names: list[str] = []
    arms: list[str] = []
    choices: list[str] = []
    value_options = list(GLOBAL_VALUE_OPTIONS)
    for spec in commands:
        names.append(spec.name)
        options = [flag for arg in spec.args for flag in arg.flags]
        value_options += [f for a in spec.args if a.kind is not ArgKind.FLAG for f in a.flags]
        kinds = [_kind(spec.name, a) for a in spec.args if not a.flags]
        arms.append(f"{spec.name}) options=({' '.join(options)}); kinds=({' '.join(kinds)}) ;;")
        choices += [
            f"{_kind(spec.name, a)}) cands=({' '.join(a.choices)}) ;;"
            for a in spec.args
            if a.choices and not a.flags
        ]
    return names, arms, sorted(set(value_options)), choices


def _fill(template: str, commands: Iterable[CommandSpec], python: str) -> str:
    names, arms, value_options, choices = _tables(commands)
    values = {
        "@PYTHON@": shlex.quote(python),
        "@PARSER@": shlex.quote(_PARSER),
        "@TIMEOUT@": str(NAMES_TIMEOUT_S),
        "@COMMANDS@": " ".join(names),
        "@GLOBAL_OPTIONS@": " ".join((*GLOBAL_VALUE_OPTIONS, *GLOBAL_FLAGS)),
        "@SOCKET_OPTIONS@": "|".join(GLOBAL_VALUE_OPTIONS),
        "@VALUE_OPTIONS@": "|".join(o for o in value_options if o not in GLOBAL_VALUE_OPTIONS),
        "@SIGNALS@": " ".join(_signals()),
        "@ARMS@": "\n".join(" " * 8 + arm for arm in arms),
        "@CHOICES@": "\n".join(" " * 8 + arm for arm in choices),
    }
    for token, value in values.items():
        template = template.replace(token, value)
    return template


def script(shell: str, commands: Iterable[CommandSpec], python: str) -> str:
    """The completion script for ``shell``; ``python`` parses the daemon's JSON answer."""
    if shell == "bash":
        return _fill(_BASH, commands, python)
    if shell == "zsh":
        return _fill(_ZSH, commands, python)
    raise UsageError(f"completion: unknown shell {shell!r} (expected one of: {', '.join(SHELLS)})")


# Both scripts find the command and count positionals the same way: skip options,
# and the value after an option that takes one (-s SOCKET, -n N).

_BASH = r"""# bash completion for supctl; generated by `supctl completion bash`.
# Use: source <(supctl completion bash), or save the output as
# /etc/bash_completion.d/supctl or ~/.local/share/bash-completion/completions/supctl.

_supctl_names() {
    # $1: apps or targets. Asks the running daemon; nothing when it is unreachable.
    local py=@PYTHON@
    [[ -x $py ]] || py=python3
    local -a tmo=()
    command -v timeout >/dev/null 2>&1 && tmo=(timeout @TIMEOUT@)
    "${tmo[@]}" "$_supctl_cmd" "${_supctl_sock[@]}" --json status </dev/null 2>/dev/null |
        "$py" -c @PARSER@ "$1" 2>/dev/null
}

_supctl() {
    local -a words=() options=() kinds=() cands=() _supctl_sock=()
    local cur prev word cmd="" kind="" strip="" _supctl_cmd
    local -i i npos=0 last
    COMPREPLY=()
    if [[ -n ${COMP_LINE-} ]]; then
        # Re-split the line as typed: bash's COMP_WORDS cut APP:INSTANCE at the colon.
        local line=${COMP_LINE:0:COMP_POINT}
        read -ra words <<<"$line"
        [[ -z $line || $line == *[[:space:]] ]] && words+=("")
        [[ $COMP_WORDBREAKS == *:* ]] && strip=1
    else
        words=("${COMP_WORDS[@]:0:COMP_CWORD+1}")
    fi
    last=${#words[@]}-1
    ((last >= 1)) || return 0
    cur=${words[last]}
    prev=${words[last-1]}
    _supctl_cmd=${words[0]:-supctl}
    for ((i = 1; i < last; i++)); do
        word=${words[i]}
        case $word in
            @SOCKET_OPTIONS@) _supctl_sock=(--socket "${words[i+1]}"); i+=1; continue ;;
            --socket=*) _supctl_sock=("$word"); continue ;;
            @VALUE_OPTIONS@) i+=1; continue ;;
            -*) continue ;;
        esac
        if [[ -z $cmd ]]; then cmd=$word; else npos+=1; fi
    done
    case $prev in
        @SOCKET_OPTIONS@) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
        @VALUE_OPTIONS@) return 0 ;;
    esac
    case $cmd in
@ARMS@
        "") options=(); kinds=(command) ;;
        *) return 0 ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "@GLOBAL_OPTIONS@ ${options[*]}" -- "$cur")
        return 0
    fi
    if ((npos < ${#kinds[@]})); then
        kind=${kinds[npos]}
    elif [[ ${kinds[*]: -1} == apps ]]; then
        kind=apps
    fi
    case $kind in
        command) cands=(@COMMANDS@) ;;
        app | apps) mapfile -t cands < <(_supctl_names apps) ;;
        target) mapfile -t cands < <(_supctl_names targets) ;;
        signal) cands=(@SIGNALS@) ;;
@CHOICES@
    esac
    mapfile -t COMPREPLY < <(compgen -W "${cands[*]}" -- "$cur")
    if [[ -n $strip && $cur == *:* ]]; then
        # Readline replaces only the part after the last colon.
        local prefix=${cur%"${cur##*:}"}
        COMPREPLY=("${COMPREPLY[@]#"$prefix"}")
    fi
    return 0
}

complete -F _supctl supctl
"""

_ZSH = r"""#compdef supctl
# zsh completion for supctl; generated by `supctl completion zsh`.
# Use: source <(supctl completion zsh) after compinit, or save the output as
# _supctl in a directory of $fpath.

_supctl_names() {
    # $1: apps or targets. Asks the running daemon; nothing when it is unreachable.
    local py=@PYTHON@
    [[ -x $py ]] || py=python3
    local -a tmo
    (( $+commands[timeout] )) && tmo=(timeout @TIMEOUT@)
    $tmo "$_supctl_cmd" $_supctl_sock --json status </dev/null 2>/dev/null |
        $py -c @PARSER@ "$1" 2>/dev/null
}

_supctl() {
    local -a options kinds cands _supctl_sock
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]} word cmd= kind=
    local _supctl_cmd=${words[1]:-supctl}
    local -i i npos=0
    for (( i = 2; i < CURRENT; i++ )); do
        word=${words[i]}
        case $word in
            (@SOCKET_OPTIONS@) _supctl_sock=(--socket "${words[i+1]}"); (( i++ )); continue ;;
            (--socket=*) _supctl_sock=("$word"); continue ;;
            (@VALUE_OPTIONS@) (( i++ )); continue ;;
            (-*) continue ;;
        esac
        if [[ -z $cmd ]]; then cmd=$word; else (( npos++ )); fi
    done
    case $prev in
        (@SOCKET_OPTIONS@) _files; return ;;
        (@VALUE_OPTIONS@) return 1 ;;
    esac
    case $cmd in
@ARMS@
        ("") options=(); kinds=(command) ;;
        (*) return 1 ;;
    esac
    if [[ $cur == -* ]]; then
        compadd -- @GLOBAL_OPTIONS@ $options
        return
    fi
    if (( npos < $#kinds )); then
        kind=${kinds[npos+1]}
    elif [[ ${kinds[-1]-} == apps ]]; then
        kind=apps
    fi
    case $kind in
        (command) cands=(@COMMANDS@) ;;
        (app|apps) cands=(${(f)"$(_supctl_names apps)"}) ;;
        (target) cands=(${(f)"$(_supctl_names targets)"}) ;;
        (signal) cands=(@SIGNALS@) ;;
@CHOICES@
    esac
    (( $#cands )) && compadd -- $cands
}

if [[ ${zsh_eval_context[-1]-} == loadautofunc ]]; then
    _supctl "$@"
elif (( $+functions[compdef] )); then
    compdef _supctl supctl
fi
"""
