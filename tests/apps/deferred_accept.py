"""testapp.py on a listener with TCP_DEFER_ACCEPT, as Unicorn sets it on every listener.

It sets the option on the socket passed as LISTEN_FDS (fd 3) -- the supervisor's own
socket, so it stays set for every later generation too -- and then execs testapp.py
in place (same pid, same fds), which serves on it. With the option the kernel hands
a connection to accept() only once data arrived on it. DEFER_SECONDS (default 1,
Unicorn's) is the option's value.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    raise SystemExit("deferred_accept: expects one socket by LISTEN_FDS")
listener = socket.socket(fileno=3)
listener.setsockopt(
    socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, int(os.environ.get("DEFER_SECONDS", "1"))
)
listener.detach()  # fd 3 stays open (and inheritable) for testapp.py
testapp = str(Path(__file__).with_name("testapp.py"))
os.execv(sys.executable, [sys.executable, testapp])
