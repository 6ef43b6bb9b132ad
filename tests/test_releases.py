"""Unit tests of releases.py: the deploy history, the ``current`` symlink, pruning.

No daemon here: a ReleaseStore on a temporary ``root`` and ``state_dir``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from supervisord_lite.app.releases import History, ReleaseStore
from supervisord_lite.config.settings import ReleaseConfig


def make_store(tmp_path: Path, keep: int = 2, app: str = "web") -> ReleaseStore:
    root = tmp_path / "root"
    (root / "releases").mkdir(parents=True, exist_ok=True)
    return ReleaseStore(ReleaseConfig(root=str(root), keep=keep), app, str(tmp_path / "state"))


def add_release(store: ReleaseStore, name: str, age: float = 0.0) -> Path:
    """Create ``releases/NAME`` (with a file in it), its mtime ``age`` seconds ago."""
    path = Path(store.release_dir(name))
    path.mkdir(parents=True)
    (path / "app.py").write_text("print('hello')\n")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def add_releases(store: ReleaseStore, *names: str) -> None:
    """Create releases oldest first: the first name gets the oldest mtime."""
    for n, name in enumerate(names):
        add_release(store, name, age=1000.0 - n * 10)


def on_disk(store: ReleaseStore) -> set[str]:
    return set(os.listdir(os.path.join(store.cfg.root, "releases")))


# --------------------------------------------------------------------------- History.previous


@pytest.mark.parametrize(
    ("deployed", "current", "expected"),
    [
        ([], None, None),
        (["v1"], None, None),
        (["v1"], "v1", None),
        (["v1", "v2"], "v2", "v1"),
        (["v1", "v2", "v3"], "v3", "v2"),
        # a rollback (v2 -> v1) is a deploy of v1: rolling back again returns to v2
        (["v1", "v2", "v1"], "v1", "v2"),
        # the same release deployed twice in a row is one step, not a rollback target
        (["v1", "v2", "v2"], "v2", "v1"),
        (["v1", "v1", "v2", "v2", "v2"], "v2", "v1"),
        # current is what was deployed last, even when older entries repeat it
        (["v2", "v1", "v2", "v3"], "v3", "v2"),
        # current unknown to the history (e.g. a hand-made `current` link): no guess
        (["v1", "v2"], "v9", None),
    ],
)
def test_history_previous(deployed: list[str], current: str | None, expected: str | None) -> None:
    history = History(list(deployed), current)
    assert history.previous() == expected
    assert history.deployed == deployed  # previous() does not change the history


def test_history_defaults_are_not_shared() -> None:
    a, b = History(), History()
    a.deployed.append("v1")
    assert b.deployed == []
    assert b.current is None and b.previous() is None


# --------------------------------------------------------------------------- switch_current


def test_switch_current_points_at_the_release_relatively(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_releases(store, "v1", "v2")
    link = Path(store.cfg.root) / "current"
    assert store.current_link() is None  # no link yet
    store.switch_current("v1")
    assert os.readlink(link) == os.path.join("releases", "v1")  # relative: root may move
    assert link.resolve() == Path(store.release_dir("v1")).resolve()
    assert store.current_link() == "v1"
    store.switch_current("v2")
    assert os.readlink(link) == os.path.join("releases", "v2")
    assert store.current_link() == "v2"
    assert (link / "app.py").read_text() == "print('hello')\n"
    assert sorted(os.listdir(store.cfg.root)) == ["current", "releases"]  # no .tmp left


def test_switch_current_survives_a_stale_temporary_link(tmp_path: Path) -> None:
    """A crash between symlink() and rename() leaves current.tmp: the next switch works."""
    store = make_store(tmp_path)
    add_releases(store, "v1", "v2")
    store.switch_current("v1")
    os.symlink("releases/gone", os.path.join(store.cfg.root, "current.tmp"))
    store.switch_current("v2")
    assert store.current_link() == "v2"
    assert not os.path.lexists(os.path.join(store.cfg.root, "current.tmp"))


def test_switch_current_is_atomic_for_readers(tmp_path: Path) -> None:
    """A reader never sees `current` missing or dangling while it is switched (rename over
    the old link, not unlink + symlink)."""
    store = make_store(tmp_path)
    add_releases(store, "v1", "v2")
    store.switch_current("v1")
    link = os.path.join(store.cfg.root, "current")
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[str] = []

    def reader() -> None:
        deadline = time.monotonic() + 10.0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                seen.add(os.readlink(link))
                if not os.path.isfile(os.path.join(link, "app.py")):
                    errors.append("current/app.py missing")
            except OSError as exc:
                errors.append(repr(exc))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for n in range(2000):
            store.switch_current("v2" if n % 2 == 0 else "v1")
    finally:
        stop.set()
        thread.join(15)
    assert not errors, errors[:5]
    assert seen <= {"releases/v1", "releases/v2"}
    assert store.current_link() == "v1"


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    history = History(["v1", "v2", "v1"], "v1")
    store.save(history)
    loaded = store.load()
    assert loaded == history
    assert loaded.previous() == "v2"
    with open(store.history_path) as f:
        assert json.load(f) == {"deployed": ["v1", "v2", "v1"], "current": "v1"}
    assert store.history_path == str(tmp_path / "state" / "releases" / "web.json")
    assert os.listdir(tmp_path / "state" / "releases") == ["web.json"]  # no .tmp left


def test_each_app_has_its_own_history(tmp_path: Path) -> None:
    web, api = make_store(tmp_path, app="web"), make_store(tmp_path, app="api")
    web.save(History(["v1", "v2"], "v2"))
    api.save(History(["a1"], "a1"))
    assert web.load() == History(["v1", "v2"], "v2")
    assert api.load() == History(["a1"], "a1")


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    """The history is written to a temporary file and renamed over the old one, so a
    reader (or a crash) sees the old or the new history, never a torn one."""
    store = make_store(tmp_path)
    store.save(History(["v1"], "v1"))
    before = os.stat(store.history_path).st_ino
    store.save(History(["v1", "v2"], "v2"))
    assert os.stat(store.history_path).st_ino != before  # a new file, renamed into place
    assert store.load() == History(["v1", "v2"], "v2")


def test_save_keeps_the_last_100_entries(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    names = [f"r{n:03d}" for n in range(150)]
    store.save(History(names, names[-1]))
    loaded = store.load()
    assert loaded.deployed == names[-100:]
    assert loaded.current == "r149"
    assert loaded.previous() == "r148"


def test_record_appends_and_makes_current(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_releases(store, "v1", "v2")
    store.switch_current("v1")
    first = store.record("v2")  # no history file yet: starts from the `current` link
    assert first == History(["v1", "v2"], "v2", {"v2": "ok"})
    assert store.load() == first
    assert store.record("v1") == History(["v1", "v2", "v1"], "v1", {"v1": "ok", "v2": "ok"})


def test_load_without_history_falls_back_to_the_current_link(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.load() == History([], None)  # nothing at all
    add_releases(store, "v1")
    store.switch_current("v1")
    assert store.load() == History(["v1"], "v1")


def test_load_of_a_corrupt_history_falls_back_to_the_current_link(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_releases(store, "v3")
    store.switch_current("v3")
    os.makedirs(os.path.dirname(store.history_path))
    Path(store.history_path).write_text('{"deployed": ["v1", "v2"')  # torn write
    assert store.load() == History(["v3"], "v3")


# --------------------------------------------------------------------------- exists


def test_exists(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_releases(store, "v1")
    Path(store.release_dir("afile")).write_text("not a directory\n")
    assert store.exists("v1")
    assert not store.exists("v2")
    assert not store.exists("")
    assert not store.exists("afile")
    assert not store.exists("v1/")
    assert not store.exists("../releases/v1")
    assert not store.exists(str(Path(store.release_dir("v1"))))  # absolute path


@pytest.mark.parametrize("name", [".", ".."])
def test_exists_rejects_dot_names(tmp_path: Path, name: str) -> None:
    store = make_store(tmp_path)
    add_releases(store, "v1")
    assert not store.exists(name)


# --------------------------------------------------------------------------- prune


def test_prune_keeps_current_and_the_last_keep_deployed(tmp_path: Path) -> None:
    store = make_store(tmp_path, keep=2)
    add_releases(store, "v1", "v2", "v3", "v4", "v5")
    history = History(["v1", "v2", "v3", "v4", "v5"], "v5")
    removed = store.prune(history, {"v5"})[0]
    assert sorted(removed) == ["v1", "v2"]
    assert on_disk(store) == {"v3", "v4", "v5"}


def test_prune_never_removes_current_even_when_it_is_the_oldest(tmp_path: Path) -> None:
    """After rolling back to v1 (the oldest directory), v1 is current and stays."""
    store = make_store(tmp_path, keep=1)
    add_releases(store, "v1", "v2", "v3", "v4")
    history = History(["v1", "v2", "v3", "v4", "v1"], "v1")
    removed = store.prune(history, {"v1"})[0]
    assert "v1" not in removed and "v4" not in removed  # current, and the rollback target
    assert on_disk(store) == {"v1", "v4"}
    assert history.previous() == "v4"


def test_prune_never_removes_a_release_in_use(tmp_path: Path) -> None:
    """An instance still running an old release (e.g. one that could not be swapped back)
    keeps that directory, whatever its age."""
    store = make_store(tmp_path, keep=1)
    add_releases(store, "v1", "v2", "v3", "v4", "v5")
    history = History(["v1", "v2", "v3", "v4", "v5"], "v5")
    removed = store.prune(history, {"v5", "v1", ""})[0]
    assert "v1" not in removed
    assert {"v1", "v4", "v5"} <= on_disk(store)
    assert "v2" in removed and "v3" in removed


def test_prune_keep_zero_keeps_only_current_and_in_use(tmp_path: Path) -> None:
    store = make_store(tmp_path, keep=0)
    add_releases(store, "v1", "v2", "v3")
    history = History(["v1", "v2", "v3"], "v3")
    assert sorted(store.prune(history, {"v3", "v2"})[0]) == ["v1"]
    assert on_disk(store) == {"v2", "v3"}


def test_prune_with_few_releases_removes_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path, keep=5)
    add_releases(store, "v1", "v2", "v3")
    assert store.prune(History(["v1", "v2", "v3"], "v3"), {"v3"})[0] == []
    assert on_disk(store) == {"v1", "v2", "v3"}


def test_prune_counts_directories_only_and_removes_oldest_first(tmp_path: Path) -> None:
    """Directories unknown to the history (deployed before it existed) are old ones:
    the oldest by mtime go first; plain files under releases/ are left alone."""
    store = make_store(tmp_path, keep=2)
    add_releases(store, "a", "b", "c", "v1", "v2")
    Path(store.release_dir("README")).write_text("not a release\n")
    history = History(["v1", "v2"], "v2")
    removed = store.prune(history, {"v2"})[0]
    assert sorted(removed) == ["a", "b"]
    assert on_disk(store) == {"c", "v1", "v2", "README"}


def test_prune_without_a_releases_directory(tmp_path: Path) -> None:
    store = ReleaseStore(ReleaseConfig(root=str(tmp_path / "nothing")), "web", str(tmp_path))
    assert store.prune(History(["v1"], "v1"), {"v1"})[0] == []


def test_prune_never_removes_a_release_not_yet_deployed(tmp_path: Path) -> None:
    """The operator uploads v3 while v2 is being deployed (or ahead of time); the prune at
    the end of v2's deploy must not delete v3, or `supctl deploy web v3` says not found."""
    store = make_store(tmp_path, keep=1)
    add_releases(store, "v1", "v2", "v3")
    history = History(["v1", "v2"], "v2")
    removed = store.prune(history, {"v2"})[0]
    assert "v3" not in removed
    assert on_disk(store) == {"v1", "v2", "v3"}
