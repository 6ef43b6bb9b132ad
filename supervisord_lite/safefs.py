"""Files the root daemon writes, opened so that no link planted by another user is followed.

Standard library only. Every helper works relative to a directory fd, and every
final component is opened with ``O_NOFOLLOW``: an app whose user can write a
directory the daemon writes into (a ``logs.dir``, a release root) can swap names
there, but cannot make the daemon write through a symlink or a hard link, nor into
a file that user made. A directory path is walked one component at a time; a
symlink on the way is followed only where only a trusted user (root, the daemon's
own user) could have made it, i.e. in a directory such a user owns that nobody
else can write.

A refusal raises :class:`UnsafeFile` (an ``OSError`` whose ``strerror`` says what
was found), so callers that already handle ``OSError`` fail closed.
"""

from __future__ import annotations

import errno
import os
import stat

_MAX_LINKS = 40  # symlinks followed in one path, as the kernel's ELOOP limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A path that another user could have redirected: refused, never followed."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"refusing {path}: {why}")
        self.filename = path


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _others_can_write(st: os.stat_result) -> bool:
    return st.st_uid not in trusted_uids() or bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def open_dir(path: str, create_mode: int | None = None) -> int:
    """An fd of directory ``path`` (absolute), walked component by component.

    A missing component is created with ``create_mode`` (when given). A symlink
    component is followed only inside a directory no untrusted user can write.
    """
    if not os.path.isabs(path):
        path = os.path.abspath(path)
    todo = [c for c in path.split("/") if c and c != "."]
    todo.reverse()  # a stack: pop() gives the next component
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                fd = _replace(fd, os.open("..", _DIR_FLAGS, dir_fd=fd))
                walked = os.path.dirname(walked) or "/"
                continue
            where = f"{walked.rstrip('/')}/{name}"
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(name, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: checked below like any other
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafeFile(path, "too many symlinks")
                if _others_can_write(os.fstat(fd)) or st.st_uid not in trusted_uids():
                    raise UnsafeFile(where, "a symlink in a directory that another user can write")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    fd = _replace(fd, os.open("/", _DIR_FLAGS))
                    walked = ""
                todo.extend(reversed([c for c in target.split("/") if c and c != "."]))
                continue
            try:
                fd = _replace(fd, os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd))
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(where, "not a directory (replaced meanwhile?)") from None
                raise
            walked = where
    except BaseException:
        os.close(fd)
        raise
    return fd


def _replace(old: int, new: int) -> int:
    os.close(old)
    return new


def make_private_dir(path: str, mode: int, gid: int | None = None) -> None:
    """Create (or take over) directory ``path`` owned by us with exactly ``mode``
    (and group ``gid``); refuse one that another user owns."""
    fd = open_dir(path, create_mode=0o755)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeFile(path, f"the directory is owned by uid {st.st_uid}")
        if gid is not None and st.st_gid != gid:
            os.fchown(fd, -1, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _check_ours(fd: int, shown: str) -> None:
    """A file we may write: a regular file, owned by a trusted user, with one link."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(shown, "not a regular file")
    if st.st_uid not in trusted_uids():
        raise UnsafeFile(shown, f"owned by uid {st.st_uid}, not by the daemon")
    if st.st_nlink != 1:
        raise UnsafeFile(shown, f"it has {st.st_nlink} hard links")


def open_append(dir_fd: int, name: str, mode: int = 0o640, shown: str | None = None) -> int:
    """Open ``name`` in ``dir_fd`` for appending (created with ``mode``), never through
    a symlink, never a FIFO or device, never a file another user owns or hard-linked."""
    shown = shown or name
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        # O_NONBLOCK: a FIFO planted here must not block the daemon in open()
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(shown, "it is a symlink") from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFile(shown, "not a regular file") from None
        raise
    try:
        _check_ours(fd, shown)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``name`` in ``dir_fd`` by a new file holding ``data`` (a new temporary
    file ``NAME.tmp``, fsynced, renamed over it: a reader sees the old or the new
    content)."""
    tmp = f"{name}.tmp"
    _unlink_quietly(dir_fd, tmp)  # a leftover of a crash (or a planted link: O_EXCL)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(dir_fd, tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(dir_fd, tmp)
        raise
    os.fsync(dir_fd)


def rename(dir_fd: int, src: str, dst: str) -> bool:
    """Rename within one directory (a rename never follows links); False if ``src``
    is missing."""
    try:
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def unlink(dir_fd: int, name: str) -> None:
    """Remove ``name`` (the link itself, if it is one); a missing one is fine."""
    _unlink_quietly(dir_fd, name)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def replace_symlink(dir_fd: int, name: str, target: str) -> None:
    """Point symlink ``name`` in ``dir_fd`` at ``target`` atomically (a new link
    ``NAME.tmp`` renamed over the old one)."""
    tmp = f"{name}.tmp"
    _unlink_quietly(dir_fd, tmp)  # symlink() below never follows what is there
    os.symlink(target, tmp, dir_fd=dir_fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(dir_fd, tmp)
        raise
    os.fsync(dir_fd)


def read_small(path: str, limit: int, dir_fd: int | None = None) -> bytes | None:
    """The content of a regular file of at most ``limit`` bytes, never read through a
    final symlink nor from a FIFO or device; None when it is not that."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None
