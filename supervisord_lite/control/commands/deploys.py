"""Releases: ``deploy``, ``promote`` and ``rollback`` (declarations).

Their handlers are in :mod:`.deploys_handlers`.
"""

from __future__ import annotations

from .spec import APP, EXIT_NO_SUCH_APP, NO_SUCH_APP, ArgKind, ArgSpec, CommandSpec

DEPLOY = CommandSpec(
    "deploy",
    "canary deploy: the backup gets RELEASE and must become ready, then the primary",
    (
        APP,
        ArgSpec("release", ArgKind.STRING, "the release to deploy"),
        ArgSpec(
            "pause",
            ArgKind.FLAG,
            "stop after the backup; continue with 'promote'",
            required=False,
            flags=("--pause",),
            default=False,
        ),
        ArgSpec(
            "artifact",
            ArgKind.STRING,
            "fetch RELEASE from this URL or absolute path (a .tar.gz, .zip or one file) "
            "and unpack it first",
            required=False,
            flags=("--artifact",),
        ),
        ArgSpec(
            "sha256",
            ArgKind.STRING,
            "the artifact's sha256 (checked before anything else)",
            required=False,
            flags=("--sha256",),
        ),
    ),
    done="{app}: deployed {release}",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

PROMOTE = CommandSpec(
    "promote",
    "continue a deploy started with --pause",
    (APP,),
    done="{app}: promoted",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

ROLLBACK = CommandSpec(
    "rollback",
    "deploy the previous release",
    (APP,),
    done="{app}: rolled back",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

COMMANDS = (DEPLOY, PROMOTE, ROLLBACK)
