"""``deploy``: a canary deploy of a release, backup first, optionally paused after it.

The declaration and the daemon's side: one call into the supervisor, which returns
when the app's instances all run the release (or the deploy paused after the backup;
``promote`` continues it). supctl prints progress, then the ``done`` line.
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import APP, EXIT_NO_SUCH_APP, NO_SUCH_APP, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``deploy`` needs from the supervisor."""

        async def deploy(
            self,
            app: str,
            release: str,
            pause: bool,
            progress: Progress,
            artifact: str | None = None,
            sha256: str | None = None,
            uid: int | None = None,  # the caller's, for the history and the notify hooks
        ) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    args = call.args
    return await call.api.deploy(
        args["app"],
        args["release"],
        args["pause"],
        call.progress,
        artifact=args.get("artifact"),
        sha256=args.get("sha256"),
        uid=call.uid,
    )


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
