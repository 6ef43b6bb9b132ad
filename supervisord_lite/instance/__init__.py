"""One instance of an app: the pure state machine and the actor that carries it out.

Owns: the state table (``states``: ``decide(state, event) -> transition``, imports
nothing of the project), the actor (``actor``: the only writer of an instance's
state) and its messages (``messages``), what the rest of the daemon holds
(``instance``), a spawned process tree (``generation``) and the runners: spawn,
readiness, liveness, swap and stop (``spawn``, ``ready``, ``liveness``, ``swap``,
``stop``), probes (``probes``), the swap's report (``swap_report``), captured output
(``output``) and the records a successor daemon adopts (``records``). May import:
``host``, ``config``, ``state.journal``, ``state.handover``, ``snapshots``, ``log``.
"""
