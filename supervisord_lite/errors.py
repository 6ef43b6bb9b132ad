"""Exception types and the error codes they carry on the wire and as exit statuses.

Every error that reaches an operator is one of these: the control protocol sends
``code`` and ``message`` (and ``details`` such as the app's last output lines), and
``supctl`` turns ``code`` into its exit status through :data:`EXIT_STATUS`.
"""

from __future__ import annotations

from enum import StrEnum

TYPE_CHECKING = False  # typing is for mypy only: supctl imports this module on every run
if TYPE_CHECKING:
    from typing import Any


class ErrorCode(StrEnum):
    """The error codes used on the wire; each maps to one exit status."""

    FAILED = "failed"  # the operation failed; the old state was kept
    USAGE = "usage"  # bad arguments to a command
    CONFIG = "config"  # the config file is invalid
    UNREACHABLE = "unreachable"  # the daemon cannot be reached (client side only)
    NO_SUCH_APP = "no_such_app"  # unknown app or instance
    BUSY = "busy"  # a conflicting operation is in progress on that app
    PERMISSION = "permission"  # the peer is not allowed to talk to the daemon
    PROTOCOL = "protocol"  # malformed request
    INTERNAL = "internal"  # a bug: the daemon caught an unexpected exception


EXIT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.FAILED: 1,
    ErrorCode.BUSY: 1,
    ErrorCode.INTERNAL: 1,
    ErrorCode.USAGE: 2,
    ErrorCode.CONFIG: 2,
    ErrorCode.PROTOCOL: 2,
    ErrorCode.UNREACHABLE: 3,
    ErrorCode.PERMISSION: 3,
    ErrorCode.NO_SUCH_APP: 4,
}


class SupervisorError(Exception):
    """Base of every error an operator may see; carries a wire code and details."""

    code: ErrorCode = ErrorCode.FAILED

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` object of a control-protocol response."""
        return {"code": self.code.value, "message": self.message, **self.details}


class OperationFailed(SupervisorError):
    """An operation did not reach its goal (the app did not become ready, ...)."""

    code = ErrorCode.FAILED


class Busy(SupervisorError):
    """A conflicting operation is already in progress on the same app."""

    code = ErrorCode.BUSY


class UsageError(SupervisorError):
    """A command was given bad arguments (unknown signal name, bad count, ...)."""

    code = ErrorCode.USAGE


class NoSuchApp(SupervisorError):
    """The named app or instance is not configured."""

    code = ErrorCode.NO_SUCH_APP


class ProtocolError(SupervisorError):
    """A request on the control socket could not be understood."""

    code = ErrorCode.PROTOCOL


class PermissionDenied(SupervisorError):
    """The control-socket peer is not root, the daemon's user, or in its group."""

    code = ErrorCode.PERMISSION


class ConfigError(SupervisorError):
    """The config is invalid; ``str()`` names the file, line and key path."""

    code = ErrorCode.CONFIG

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = f"{path}: {message}" if path else message
        super().__init__(where + what, file=file, line=line, path=path)
        self.file = file
        self.line = line
        self.path = path
        self.reason = message


class DaemonLocked(SupervisorError):
    """Another daemon already holds the state directory's lock."""

    code = ErrorCode.FAILED


class SpawnError(OperationFailed):
    """The child could not be started at all (command not found, bad cwd or user)."""
