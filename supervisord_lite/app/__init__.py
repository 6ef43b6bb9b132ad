"""One app: its sockets and instances, its deploys and releases, its merged output.

Owns: ``app`` (sockets, instances, reload order), ``deploys`` (canary deploy,
promote, rollback and the one-operation-at-a-time guard), ``releases`` (release
directories, ``current``, deploy history) and ``output`` (the instances' output merged
for ``supctl logs``). May import: ``instance``, ``host``, ``config``, ``snapshots``.
"""
