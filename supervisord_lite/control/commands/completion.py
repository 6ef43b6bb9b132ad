"""``completion``: a command supctl answers by itself, never sent to the daemon.

Only its declaration is here (it has no daemon side); supctl writes the script
(:func:`supctl.main.print_completion`, from :mod:`supctl.completion`).
"""

from __future__ import annotations

from .spec import ArgKind, ArgSpec, CommandSpec

#: The shells :mod:`supctl.completion` writes scripts for.
SHELLS = ("bash", "zsh")

COMPLETION = CommandSpec(
    "completion",
    "print a shell completion script: source <(supctl completion bash)",
    (ArgSpec("shell", ArgKind.STRING, "bash or zsh", choices=SHELLS),),
)
