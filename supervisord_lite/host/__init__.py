"""The host: the only code that forks, signals, reads /proc or netlink, drives cgroups
and touches files where an app's user may write.

Owns: spawning (``spawning``: fork / posix_spawn, the child's set-up, exec checks as
the app, files read with an app's rights), exit watching and the subreaper
(``exits``), reading processes (``procs``: psutil, and /proc where it is hot), the
one stop sequence (``stopping``), listening sockets and other processes'
descriptors (``fds``), accepting without spinning when out of fds (``accepting``),
cgroups (``cgroups``), sock_diag (``sockdiag``), accept queues (``backlog``), every
filesystem access in a place an app's user may write (``files``) and env files
(``envfile``). May import: ``config``, ``errors``, ``paths``, ``log``.
"""
