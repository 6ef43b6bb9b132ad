"""The control socket: the wire protocol, the server, who may connect, the commands.

Owns: ``protocol`` (the wire format), ``server`` (the unix socket server), ``peers``
(SO_PEERCRED and SO_PEERGROUPS) and ``commands`` (one module per command: its
declaration, handler and printer). ``protocol`` and ``commands`` are light at run
time (standard library only): ``supctl`` imports them.
"""
