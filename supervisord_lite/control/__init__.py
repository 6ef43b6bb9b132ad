"""The control socket: the wire protocol, the server, who may connect, the commands.

Owns: ``protocol`` (the wire format), ``server`` (the unix socket server), ``peers``
(SO_PEERCRED and SO_PEERGROUPS) and ``commands`` (every command declared once).
``protocol`` and ``commands`` are standard library only: ``supctl`` imports them.
"""
