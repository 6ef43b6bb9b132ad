"""All apps: the control API, dependency order, and ``update`` (plan, then apply).

Owns: ``supervisor`` (the API commands call), ``ordering`` (start once dependencies
are ready, stop dependents first), ``plan`` (the pure ``diff(old, new) -> Plan``),
``updater`` (an update all or nothing) and ``sampler`` (when RSS and CPU are
measured). May import: ``app``, ``instance``, ``state``, ``host``, ``config``.
"""
