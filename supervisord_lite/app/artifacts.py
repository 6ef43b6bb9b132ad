"""Artifacts: a release fetched, verified and unpacked into ``releases/NAME``.

``supctl deploy APP NAME --artifact URL --sha256 HEX`` (or the app's
``release.artifact``) gives a URL (http, https, ``file://``) or an absolute path.
The order is what makes it safe for a root daemon in a directory the app's user
owns:

1. The bytes are copied into the daemon's private, unnamed temporary file
   (``O_TMPFILE``: gone with the daemon, whatever kills it), hashed on the way;
   an http(s) URL by :mod:`fetch`, a local path by a child with the app's rights
   (so no operator can have root read a file for them). Progress lines while it
   downloads; over ``release.max_artifact`` bytes is refused.
2. The sha256 is checked before anything else happens.
3. A child running as the app's user (:func:`os_spawn.call_as`) unpacks it into
   ``releases/.incoming-NAME-RANDOM`` (:mod:`unpack`: every entry checked first).
4. The daemon renames that directory to ``NAME`` by directory fd (:mod:`safefs`).

A daemon killed at any instant leaves no release or a complete one: at worst an
``.incoming-*`` directory, swept (by directory fd) on the next deploy and when the
app is made. A name that exists already is fine with the same contents (the same
recorded checksum, or the same files) and refused with other contents.
"""

from __future__ import annotations

import asyncio
import functools
import grp
import hashlib
import os
import pwd
import re
import secrets
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.settings import AppConfig, ReleaseConfig
from ..errors import OperationFailed, UsageError
from ..host import fetch, files, spawning, unpack
from ..log import get_logger
from .releases import ReleaseStore

log = get_logger("artifacts")

INCOMING = ".incoming-"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZST_SUFFIXES = (".tar.zst", ".tzst")
MAX_ENTRIES = 200_000  # entries of one archive (a million empty files is an attack too)
_PROGRESS_EVERY = 1.0  # seconds between two progress lines of a download

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Fetched:
    """What was installed: for the history and the deploy's answer."""

    url: str
    sha256: str
    size: int
    seconds: float
    installed: bool  # False: the release was there already with these contents


def render_url(template: str, app: str, release: str) -> str:
    return template.replace("{app}", app).replace("{release}", release)


def artifact_format(url: str) -> str:
    """``tar``, ``zip`` or ``file`` (kept as it is), from the name in the URL."""
    name = os.path.basename(urllib.parse.urlsplit(url).path).lower()
    if name.endswith(_ZST_SUFFIXES):
        raise UsageError(f"{url}: zstd archives need a zstd library this daemon does not have")
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    return "file"


def file_name(url: str) -> str:
    return os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def local_path(url: str) -> str | None:
    """The path of a ``file://`` URL or an absolute path; None for http(s)."""
    if fetch.is_http(url):
        return None
    if url.startswith("file://"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"{url}: a file:// URL must name a local file")
        return urllib.parse.unquote(parts.path)
    if not os.path.isabs(url):
        raise UsageError(f"{url}: an artifact is an http(s) or file:// URL, or an absolute path")
    return url


def check_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, not {value!r}")
    return digest


def sweep_incoming(store: ReleaseStore) -> list[str]:
    """Remove the ``.incoming-*`` leftovers of an interrupted install (by directory fd)."""
    try:
        base_fd = store.open_releases()
    except OSError:
        return []
    try:
        return _sweep(base_fd)
    finally:
        os.close(base_fd)


def _sweep(base_fd: int) -> list[str]:
    removed = []
    for name in os.listdir(base_fd):
        if name.startswith(INCOMING):
            try:
                files.remove_tree(base_fd, name)
                removed.append(name)
            except OSError as exc:
                log.warning("incoming_sweep_failed", name=name, error=str(exc))
    return removed


async def install(
    store: ReleaseStore,
    cfg: AppConfig,
    release: str,
    url: str,
    sha256: str,
    progress: Progress,
    loop: asyncio.AbstractEventLoop,
) -> Fetched:
    """Fetch ``url``, verify ``sha256``, unpack it as ``releases/RELEASE``."""
    assert cfg.release is not None
    limits = cfg.release
    if not release or release in (".", "..") or "/" in release or release.startswith("."):
        raise UsageError(f"{release!r} is not a release name (a plain name, not hidden)")
    sha256 = check_sha256(sha256)
    fmt = artifact_format(url)
    path = local_path(url)
    try:
        base_fd = store.open_releases(create=True, owner=owner_of(cfg))
    except OSError as exc:
        where = f"{limits.root}/releases"
        raise OperationFailed(f"{where}: {exc.strerror or exc}") from None
    try:
        _sweep(base_fd)
        exists = release in files.subdirectories(base_fd)
        if exists and store.load().artifacts.get(release) == sha256:
            return Fetched(url, sha256, 0, 0.0, installed=False)
        started = time.monotonic()
        with tempfile.TemporaryFile(buffering=0) as tmp:
            size = await _fetch(url, path, tmp.fileno(), cfg, progress, loop)
            digest = await asyncio.to_thread(_sha256_of, tmp.fileno())
            if digest != sha256:
                raise OperationFailed(
                    f"{url}: sha256 mismatch (expected {sha256}, got {digest}); "
                    "nothing was unpacked"
                )
            progress(f"{release}: {size} bytes, sha256 verified; unpacking", {})
            incoming = await _unpack(
                base_fd, tmp.fileno(), fmt, url, release, exists, limits, cfg, loop
            )
        seconds = time.monotonic() - started
        if not exists:
            _rename_into_place(base_fd, incoming, release, limits)
        store.note_artifact(release, sha256)
        return Fetched(url, sha256, size, seconds, installed=not exists)
    finally:
        os.close(base_fd)


def _sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


async def _fetch(
    url: str,
    path: str | None,
    fd: int,
    cfg: AppConfig,
    progress: Progress,
    loop: asyncio.AbstractEventLoop,
) -> int:
    assert cfg.release is not None
    limits = cfg.release
    if path is not None:
        work = functools.partial(unpack.copy_in, path, fd, limits.max_artifact)
        code, message = await spawning.call_as(
            work, cfg.user, cfg.group, None, limits.artifact_timeout, loop, keep_fds=(fd,)
        )
        if code is None:
            raise OperationFailed(f"{path}: not read within {limits.artifact_timeout:g}s")
        if code != 0:
            raise OperationFailed(f"cannot read the artifact {message}")
        return int(message)
    last = [time.monotonic()]

    def sink(chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < _PROGRESS_EVERY and done != total:
            return
        last[0] = now
        of = f" of {total}" if total is not None else ""
        pct = f" ({100 * done // total}%)" if total else ""
        progress(f"downloading {url}: {done}{of} bytes{pct}", {"bytes": done, "total": total})

    progress(f"downloading {url}", {})
    return await fetch.download(url, sink, limits.max_artifact, limits.artifact_timeout, report)


async def _unpack(
    base_fd: int,
    src_fd: int,
    fmt: str,
    url: str,
    release: str,
    exists: bool,
    limits: ReleaseConfig,
    cfg: AppConfig,
    loop: asyncio.AbstractEventLoop,
) -> str:
    """Unpack as the app's user into a new ``.incoming-*`` directory; its name."""
    incoming = f"{INCOMING}{release}-{secrets.token_hex(6)}"
    work = functools.partial(
        unpack.unpack,
        fmt,
        file_name(url),
        incoming,
        limits.max_unpacked,
        MAX_ENTRIES,
        release if exists else None,
        src_fd,
        base_fd,
    )
    try:
        code, message = await spawning.call_as(
            work,
            cfg.user,
            cfg.group,
            cfg.umask,
            limits.artifact_timeout,
            loop,
            keep_fds=(src_fd, base_fd),
        )
    except BaseException:
        files.remove_tree(base_fd, incoming)
        raise
    if code != 0 or exists:
        files.remove_tree(base_fd, incoming)  # refused, or the same as what is there
    if code is None:
        raise OperationFailed(f"{url}: not unpacked within {limits.artifact_timeout:g}s")
    if code != 0:
        raise OperationFailed(f"{url}: {message}; nothing was installed")
    return incoming


def _rename_into_place(base_fd: int, incoming: str, release: str, limits: ReleaseConfig) -> None:
    """The one step that makes the release exist: a rename by directory fd (onto an
    empty directory the app's user made meanwhile, at worst; a full one: ENOTEMPTY)."""
    try:
        if not files.rename(base_fd, incoming, release):
            raise OSError(2, "the unpacked directory went missing")
    except OSError as exc:
        files.remove_tree(base_fd, incoming)
        raise OperationFailed(
            f"{limits.root}/releases/{release}: cannot put it in place: {exc.strerror}"
        ) from None
    os.fsync(base_fd)


async def resolve(
    cfg: AppConfig,
    release: str,
    url: str | None,
    sha256: str | None,
    loop: asyncio.AbstractEventLoop,
) -> tuple[str, str] | None:
    """The artifact of a deploy: (URL, sha256), from the command or the app's
    ``release.artifact``; None when neither names one (the release must exist).

    Without ``--sha256``, the checksum is read from ``release.artifact_sha256``
    (default: the artifact's URL + ``.sha256``, a ``sha256sum`` line).
    """
    assert cfg.release is not None
    if url is None:
        if cfg.release.artifact is None:
            if sha256 is not None:
                raise UsageError("--sha256 needs --artifact (or the app's release.artifact)")
            return None
        url = render_url(cfg.release.artifact, cfg.name, release)
    if sha256 is not None:
        return url, check_sha256(sha256)
    if cfg.release.artifact_sha256 is not None:
        where = render_url(cfg.release.artifact_sha256, cfg.name, release)
    else:
        where = url + ".sha256"
    text = await _small(where, cfg, loop)
    words = text.split()
    if not words:
        raise OperationFailed(f"{where}: empty; give --sha256")
    try:
        return url, check_sha256(words[0])
    except UsageError:
        raise OperationFailed(f"{where}: no sha256 in it; give --sha256") from None


async def _small(url: str, cfg: AppConfig, loop: asyncio.AbstractEventLoop) -> str:
    """A checksum file (at most 4 KiB): over http(s), or read with the app's rights."""
    chunks: list[bytes] = []
    path = local_path(url)
    if path is None:
        await fetch.download(url, chunks.append, 4096, 30.0, lambda done, total: None)
        return b"".join(chunks).decode(errors="replace")
    try:
        data = await spawning.read_as(path, 4096, cfg.user, cfg.group, loop)
    except OSError as exc:
        raise OperationFailed(f"{path}: {exc.strerror or exc}") from None
    return data.decode(errors="replace")


def owner_of(cfg: AppConfig) -> tuple[int, int] | None:
    """The uid and gid a directory made for the app gets (None: the daemon's)."""
    if cfg.user is None and cfg.group is None:
        return None
    uid, gid = os.geteuid(), os.getegid()
    if cfg.user is not None:
        pw = pwd.getpwnam(cfg.user)
        uid, gid = pw.pw_uid, pw.pw_gid
    if cfg.group is not None:
        gid = grp.getgrnam(cfg.group).gr_gid
    return uid, gid
