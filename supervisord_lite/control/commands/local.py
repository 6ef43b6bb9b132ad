"""Commands supctl answers by itself, never sent to the daemon: ``completion``.

Its handler is supctl's :func:`supctl.print_completion`.
"""

from __future__ import annotations

from .spec import ArgKind, ArgSpec, CommandSpec

#: The shells :mod:`completion` writes scripts for.
SHELLS = ("bash", "zsh")

COMPLETION = CommandSpec(
    "completion",
    "print a shell completion script: source <(supctl completion bash)",
    (ArgSpec("shell", ArgKind.STRING, "bash or zsh", choices=SHELLS),),
)

COMMANDS = (COMPLETION,)
