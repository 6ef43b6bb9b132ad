"""What outlives the daemon: the journal, the handover record, adoption, history.

Owns: ``journal`` (intent before every spawn, O(1) appends, snapshots),
``handover`` (the record's format; what a successor daemon adopts or stops),
``recovery`` (adoption and rollback of what a crash left half-done), ``history`` and
``recorder`` (the bounded event history and what feeds it) and ``directory`` (the
state directory: private, locked, its pidfile). ``journal`` and ``handover`` sit
below ``instance``; ``recovery`` and ``recorder`` above ``app``.
"""
