"""The benchmark's HTTP app: answers every request with its own pid, nothing else.

Deliberately minimal (only ``os``, ``socket`` and ``sys``; run it with ``python -I -S``)
so that its boot time is mostly the interpreter's, the same under every supervisor.
It serves on the socket passed by socket activation (``LISTEN_FDS``, fd 3) when that
is meant for it, else binds ``127.0.0.1:PORT`` itself (``--port N`` or ``$PORT``),
with SO_REUSEADDR so that a replacement can bind at once after a kill -9.
"""

from __future__ import annotations

import os
import socket
import sys


def listening_socket() -> socket.socket:
    if os.environ.get("LISTEN_FDS") and os.environ.get("LISTEN_PID") == str(os.getpid()):
        return socket.socket(fileno=3)
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    port = port or int(os.environ["PORT"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def main() -> None:
    sock = listening_socket()
    body = str(os.getpid()).encode()
    response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    response += b"Connection: close\r\n\r\n" + body
    while True:
        conn, _ = sock.accept()
        try:
            conn.settimeout(2.0)
            conn.recv(4096)  # the request (a probe may send nothing and hang up)
            conn.sendall(response)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
