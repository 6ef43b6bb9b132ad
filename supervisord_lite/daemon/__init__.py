"""The daemon's wiring: start, serve, hand over, stop; systemd's notify; the GC policy.

Owns: ``main`` (wiring and exit codes), ``notify`` (sd_notify to systemd and the
NOTIFY_SOCKET server for children) and ``gcpolicy`` (the settled heap frozen after
boot and each update). May import everything but ``supctl`` and ``cli``.
"""
