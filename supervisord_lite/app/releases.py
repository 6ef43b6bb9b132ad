"""Releases on disk: ``root/releases/NAME``, the ``root/current`` symlink, history.

The deploy history of each app lives in ``STATE_DIR/releases/APP.json`` (written
atomically), so a restarted supervisor knows what runs and what ``rollback`` means.
``current`` is switched by renaming a temporary symlink over it (atomic), and only
once a deploy has completed. The history also holds each release's last deploy
outcome (``ok`` or ``failed``) and the sha256 of the artifact it was unpacked from.

Pruning keeps ``keep`` old release directories and never removes one that is
current, the rollback target (the newest release before current whose deploy did
not fail), a paused canary's, or one run by an instance; releases whose deploy
failed do not count toward ``keep`` and go first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..config.settings import ReleaseConfig
from ..errors import OperationFailed
from ..host import files
from ..paths import RELEASES_DIR

_MAX_HISTORY_BYTES = 1 << 20
OK = "ok"
FAILED = "failed"


@dataclass
class History:
    """What was deployed, oldest first; ``current`` is the last completed deploy."""

    deployed: list[str] = field(default_factory=list)
    current: str | None = None
    outcome: dict[str, str] = field(default_factory=dict)  # release -> "ok" | "failed"
    artifacts: dict[str, str] = field(default_factory=dict)  # release -> sha256

    def failed(self, name: str) -> bool:
        return self.outcome.get(name) == FAILED

    def previous(self) -> str | None:
        """The release before ``current`` that last ran well (what ``rollback`` deploys)."""
        if self.current is None:
            return None
        seen_current = False
        for name in reversed(self.deployed):
            if name == self.current and not seen_current:
                seen_current = True
                continue
            if seen_current and name != self.current and not self.failed(name):
                return name
        return None


class ReleaseStore:
    def __init__(self, cfg: ReleaseConfig, app: str, state_dir: str) -> None:
        self.cfg = cfg
        self.app = app
        self.history_path = os.path.join(state_dir, RELEASES_DIR, f"{app}.json")

    def release_dir(self, name: str) -> str:
        return os.path.join(self.cfg.root, RELEASES_DIR, name)

    def exists(self, name: str) -> bool:
        """A release is a plain name under releases/ (never a path, `.` or `..`)."""
        plain = bool(name) and name not in (".", "..") and os.path.basename(name) == name
        return plain and os.path.isdir(self.release_dir(name))

    def current_link(self) -> str | None:
        """The release ``root/current`` points at, if it is a link into releases/."""
        try:
            target = os.readlink(os.path.join(self.cfg.root, "current"))
        except OSError:
            return None
        return os.path.basename(os.path.normpath(target))

    def load(self) -> History:
        try:
            raw = files.read_small(self.history_path, _MAX_HISTORY_BYTES)
            if raw is None:
                raise ValueError("no readable history")
            data = json.loads(raw)
            return History(
                list(data.get("deployed", [])),
                data.get("current"),
                {str(k): str(v) for k, v in dict(data.get("outcome", {})).items()},
                {str(k): str(v) for k, v in dict(data.get("artifacts", {})).items()},
            )
        except (OSError, ValueError, AttributeError):
            current = self.current_link()
            return History([current] if current else [], current)

    def save(self, history: History) -> None:
        deployed = history.deployed[-100:]
        known = set(deployed) | set(history.outcome) | set(history.artifacts)
        keep = set(deployed) | set(sorted(known)[-200:])  # bounded, like `deployed`
        data: dict[str, object] = {"deployed": deployed, "current": history.current}
        for key, values in (("outcome", history.outcome), ("artifacts", history.artifacts)):
            kept = {k: v for k, v in values.items() if k in keep}
            if kept:  # absent when empty: the file of a store that never used them
                data[key] = kept
        directory, name = os.path.split(self.history_path)
        dir_fd = files.open_dir(directory, create_mode=0o700)
        try:
            files.write_atomic(dir_fd, name, json.dumps(data).encode(), 0o600)
        finally:
            os.close(dir_fd)

    def switch_current(self, name: str) -> None:
        """Point ``root/current`` at ``releases/NAME`` atomically (a new link renamed
        over it, relative to the root's fd: nothing planted there is followed)."""
        try:
            dir_fd = files.open_dir(self.cfg.root)
            try:
                files.replace_symlink(dir_fd, "current", os.path.join(RELEASES_DIR, name))
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise OperationFailed(
                f"{self.app}: cannot point {self.cfg.root}/current at {name}: {exc.strerror}"
            ) from None

    def record(self, name: str) -> History:
        history = self.load()
        history.deployed.append(name)
        history.current = name
        history.outcome[name] = OK
        self.save(history)
        return history

    def mark_failed(self, name: str) -> None:
        """A deploy of ``name`` failed: it is not a rollback target and is pruned first."""
        history = self.load()
        if name != history.current:
            history.outcome[name] = FAILED
            self.save(history)

    def note_artifact(self, name: str, sha256: str) -> None:
        history = self.load()
        history.artifacts[name] = sha256
        self.save(history)

    def open_releases(self, create: bool = False, owner: tuple[int, int] | None = None) -> int:
        """An fd of ``root/releases`` (below the root's fd, no symlink followed); with
        ``create``, made when missing (given to ``owner``: the app's uid and gid)."""
        root_fd = files.open_dir(self.cfg.root)
        try:
            try:
                return files.open_beneath(root_fd, RELEASES_DIR)
            except FileNotFoundError:
                if not create:
                    raise
            return files.make_beneath(root_fd, RELEASES_DIR, 0o755, owner)
        finally:
            os.close(root_fd)

    def prune(
        self, history: History, in_use: set[str], paused: str | None = None
    ) -> tuple[list[str], str | None]:
        """Remove old release directories beyond ``keep``: (the names removed, why
        pruning was refused or stopped, if it was).

        ``releases/`` is the app's user's to write: it is opened below the root's fd
        with no symlink followed, listed by that fd, and each old release removed
        by directory fd (:func:`files.remove_tree`): a ``releases`` swapped for a
        link to another directory, or a release swapped for one, is refused.
        """
        try:
            base_fd = self.open_releases()
        except OSError as exc:
            return [], f"{self.cfg.root}/{RELEASES_DIR}: {exc.strerror or exc}"
        try:
            return self._prune_in(base_fd, history, in_use | {paused or ""})
        finally:
            os.close(base_fd)

    def _prune_in(
        self, base_fd: int, history: History, in_use: set[str]
    ) -> tuple[list[str], str | None]:
        dirs = {n: st for n, st in files.subdirectories(base_fd).items() if not n.startswith(".")}
        protected = set(in_use) | {history.current or "", history.previous() or ""}
        recent = [
            n for n in reversed(history.deployed) if n != history.current and not history.failed(n)
        ]
        protected |= set(recent[: self.cfg.keep])
        # a failed deploy's release counts for nothing and goes first
        failed = sorted(
            (n for n in dirs if history.failed(n) and n not in protected),
            key=lambda n: dirs[n].st_mtime,
        )
        # old = deployed once, or older than the current release's directory (deployed
        # before the history existed); one uploaded ahead of its deploy is kept
        deployed = set(history.deployed)
        current = dirs.get(history.current or "")
        current_mtime = current.st_mtime if current is not None else float("inf")

        def is_old(name: str) -> bool:
            return name in deployed or dirs[name].st_mtime < current_mtime

        candidates = [n for n in dirs if n not in protected and is_old(n) and n not in failed]
        candidates.sort(key=lambda n: dirs[n].st_mtime)
        old_kept = len([n for n in dirs if n in protected and not history.failed(n)]) - 1
        removable = max(0, len(candidates) - max(0, self.cfg.keep - old_kept))
        removed: list[str] = []
        for name in failed + candidates[:removable]:
            try:
                files.remove_tree(base_fd, name)
            except OSError as exc:
                where = f"{self.cfg.root}/{RELEASES_DIR}/{name}"
                return removed, f"{where}: {exc.strerror or exc}"
            removed.append(name)
        return removed, None
