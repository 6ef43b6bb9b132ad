"""Releases on disk: ``root/releases/NAME``, the ``root/current`` symlink, history.

The deploy history of each app lives in ``STATE_DIR/releases/APP.json`` (written
atomically), so a restarted supervisor knows what runs and what ``rollback`` means.
``current`` is switched by renaming a temporary symlink over it (atomic), and only
once a deploy has completed. Pruning keeps ``keep`` old release directories and
never removes one that is current, in the history's last ``keep`` entries, or run by
an instance.
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


@dataclass
class History:
    """What was deployed, oldest first; ``current`` is the last completed deploy."""

    deployed: list[str] = field(default_factory=list)
    current: str | None = None

    def previous(self) -> str | None:
        """The release before ``current`` (what ``rollback`` deploys)."""
        if self.current is None:
            return None
        seen_current = False
        for name in reversed(self.deployed):
            if name == self.current and not seen_current:
                seen_current = True
                continue
            if seen_current and name != self.current:
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
            return History(list(data.get("deployed", [])), data.get("current"))
        except (OSError, ValueError, AttributeError):
            current = self.current_link()
            return History([current] if current else [], current)

    def save(self, history: History) -> None:
        data = {"deployed": history.deployed[-100:], "current": history.current}
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
        self.save(history)
        return history

    def prune(self, history: History, in_use: set[str]) -> tuple[list[str], str | None]:
        """Remove old release directories beyond ``keep``: (the names removed, why
        pruning was refused or stopped, if it was).

        ``releases/`` is the app's user's to write: it is opened below the root's fd
        with no symlink followed, listed by that fd, and each old release removed
        by directory fd (:func:`files.remove_tree`): a ``releases`` swapped for a
        link to another directory, or a release swapped for one, is refused.
        """
        try:
            root_fd = files.open_dir(self.cfg.root)
            try:
                base_fd = files.open_beneath(root_fd, RELEASES_DIR)
            finally:
                os.close(root_fd)
        except OSError as exc:
            return [], f"{self.cfg.root}/{RELEASES_DIR}: {exc.strerror or exc}"
        try:
            return self._prune_in(base_fd, history, in_use)
        finally:
            os.close(base_fd)

    def _prune_in(
        self, base_fd: int, history: History, in_use: set[str]
    ) -> tuple[list[str], str | None]:
        dirs = files.subdirectories(base_fd)
        protected = set(in_use) | {history.current or ""}
        recent = [n for n in reversed(history.deployed) if n != history.current]
        protected |= set(recent[: self.cfg.keep])
        # old = deployed once, or older than the current release's directory (deployed
        # before the history existed); one uploaded ahead of its deploy is kept
        deployed = set(history.deployed)
        current = dirs.get(history.current or "")
        current_mtime = current.st_mtime if current is not None else float("inf")

        def is_old(name: str) -> bool:
            return name in deployed or dirs[name].st_mtime < current_mtime

        candidates = [n for n in dirs if n not in protected and is_old(n)]
        candidates.sort(key=lambda n: dirs[n].st_mtime)
        old_kept = len([n for n in dirs if n in protected]) - 1  # minus current
        removable = max(0, len(candidates) - max(0, self.cfg.keep - old_kept))
        removed: list[str] = []
        for name in candidates[:removable]:
            try:
                files.remove_tree(base_fd, name)
            except OSError as exc:
                where = f"{self.cfg.root}/{RELEASES_DIR}/{name}"
                return removed, f"{where}: {exc.strerror or exc}"
            removed.append(name)
        return removed, None
