"""Every filesystem access the daemon makes where an app's user may write.

The root daemon touches paths inside directories that an app's (untrusted) user
can write: the release root, ``releases/`` and ``current``, env files, check
scripts, pidfiles, a ``logs.dir`` inside an app's tree, unix socket paths. This
module is the one place that opens, reads, lists, renames, binds or deletes there
(docs/design.md's threat model has the table of paths). The rules:

- A directory path is walked one component at a time by directory fd; a symlink
  on the way is followed only where only a trusted user (root, the daemon's own
  user) could have made it, i.e. in a directory such a user owns that nobody else
  can write. Below a directory fd, a relative path is resolved with ``openat2``'s
  ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it, and by an
  ``O_NOFOLLOW`` walk otherwise.
- Every final component is opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``: a FIFO
  planted there cannot block the daemon), its type checked with ``fstat``, reads
  capped: an app's user can swap names, but cannot make the daemon read, write or
  delete through a link, nor block it, nor make it read without bound.
- Deletion is by directory fd, one entry at a time, never by path (no ``rmtree``):
  a directory renamed or replaced by a link meanwhile is not followed.
- A unix socket is bound and unlinked by directory fd (``/proc/self/fd/N/name``),
  so a socket directory replaced by a link after start is not followed.

Reading *as the app* (with its uid, gid and groups, so the kernel decides what it
may read) is :func:`spawning.read_as`, which runs :func:`read_regular` in a child
that dropped to the app's user.

A refusal raises :class:`UnsafeFile` (an ``OSError`` whose ``strerror`` says what
was found), so callers that already handle ``OSError`` fail closed.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import stat
import struct

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
    return _walk(path, create_mode, None)


def _walk(path: str, create_mode: int | None, movable: list[str] | None) -> int:
    """:func:`open_dir`; with ``movable``, also collect each walked directory that an
    untrusted user could rename or replace (its parent lets them)."""
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
            parent = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafeFile(path, "too many symlinks")
                if _others_can_write(parent) or st.st_uid not in trusted_uids():
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
            if movable is not None and _can_move(parent, os.fstat(fd)):
                movable.append(where)
            walked = where
    except BaseException:
        os.close(fd)
        raise
    return fd


def _can_move(parent: os.stat_result, entry: os.stat_result) -> bool:
    """Could an untrusted user rename ``entry`` out of ``parent`` (and put a link in
    its place)? Not in a sticky directory (``/tmp``) when a trusted user owns it."""
    if not _others_can_write(parent):
        return False
    sticky = bool(parent.st_mode & stat.S_ISVTX)
    return not (sticky and entry.st_uid in trusted_uids())


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


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of regular file ``path`` (absolute), refusing more than ``limit``.

    Walked like :func:`open_dir` (no untrusted symlink followed), the file itself
    opened ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat``: a FIFO, a device,
    a directory or a symlink is refused, and so is a file over ``limit`` bytes
    before a byte of it is read (a sparse 16 MiB file costs nothing). Errors are
    ``OSError`` whose ``strerror`` names what was found, never the content.
    """
    directory, name = os.path.split(os.path.abspath(path))
    if not name:
        raise UnsafeFile(path, "not a regular file")
    dir_fd = open_dir(directory)
    try:
        fd = _open_final(dir_fd, name, path)
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, "not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(path, f"larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnsafeFile(path, f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_final(dir_fd: int, name: str, shown: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(shown, "it is a symlink") from None
        raise


# --- below a directory fd: openat2 ------------------------------------------------------

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_openat2_works: bool | None = None  # None: not tried yet


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once (its ``syscall`` reaches openat2)."""
    return ctypes.CDLL(None, use_errno=True)


def _openat2(dir_fd: int, relpath: str, flags: int) -> int:
    """``openat2(dir_fd, relpath, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``; ENOSYS when
    the kernel (or this machine's libc lookup) has no openat2."""
    number = _SYS_OPENAT2.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "no openat2 here")
    libc = _libc()
    how = struct.pack(
        "QQQ", flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
    )
    buf = ctypes.create_string_buffer(how, len(how))
    fd = libc.syscall(
        ctypes.c_long(number),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(relpath)),
        buf,
        ctypes.c_size_t(len(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), relpath)
    return int(fd)


def open_beneath(dir_fd: int, relpath: str, flags: int = _DIR_FLAGS) -> int:
    """Open ``relpath`` below ``dir_fd``: never through a symlink, never above it.

    ``openat2`` where the kernel has it; else an ``O_NOFOLLOW`` walk, one component at
    a time. A symlink or ``..`` anywhere on the way is an :class:`UnsafeFile`.
    """
    global _openat2_works
    parts = [p for p in relpath.split("/") if p and p != "."]
    if not parts or ".." in parts or relpath.startswith("/"):
        raise UnsafeFile(relpath, "not a plain path below its directory")
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    if _openat2_works is not False:
        try:
            fd = _openat2(dir_fd, "/".join(parts), flags)
            _openat2_works = True
            return fd
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                _openat2_works = False
            elif exc.errno in (errno.ELOOP, errno.EXDEV):
                raise UnsafeFile(relpath, "a symlink on the way") from None
            elif exc.errno != errno.ENOTDIR:  # ENOTDIR: a link or a file; the walk says which
                raise
    fd = os.dup(dir_fd)
    try:
        for name in parts[:-1]:
            fd = _replace(fd, _open_component(fd, name, _DIR_FLAGS | os.O_NOFOLLOW, relpath))
        return _replace(fd, _open_component(fd, parts[-1], flags, relpath))
    except BaseException:
        os.close(fd)
        raise


def _open_component(dir_fd: int, name: str, flags: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(
            f"/proc/self/fd/{dir_fd}/{name}"
        ):
            raise UnsafeFile(shown, "a symlink on the way") from None
        raise


def make_beneath(dir_fd: int, name: str, mode: int, owner: tuple[int, int] | None = None) -> int:
    """Create directory ``name`` in ``dir_fd`` (an existing one is fine) and open it,
    never through a link; given to ``owner`` (uid, gid) when it is ours: a directory
    the daemon makes for an app belongs to the app's user."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    fd = open_beneath(dir_fd, name)
    try:
        if owner is not None and os.fstat(fd).st_uid in trusted_uids():
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def subdirectories(dir_fd: int) -> dict[str, os.stat_result]:
    """The real directories (not links to one) in ``dir_fd``, with their lstat."""
    found: dict[str, os.stat_result] = {}
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            found[name] = st
    return found


def remove_tree(dir_fd: int, name: str) -> None:
    """Delete ``name`` in ``dir_fd`` and everything below it, by directory fd.

    Nothing is followed: a link is removed as a link, and a directory is entered
    only through an ``O_NOFOLLOW`` open whose ``fstat`` matches the entry just
    listed (a directory swapped for a link meanwhile is refused, not followed).
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        _unlink_quietly(dir_fd, name)
        return
    sub = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        got = os.fstat(sub)
        if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafeFile(name, "replaced while being removed")
        for entry in os.listdir(sub):
            remove_tree(sub, entry)
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


# --- unix sockets ----------------------------------------------------------------------


def bind_unix(sock: socket.socket, path: str) -> None:
    """Bind ``sock`` at ``path``, a name in a directory an app's user may own.

    The directory is walked like :func:`open_dir`, and refused when an untrusted
    user could rename it or a directory above it (and put a link in its place
    between this check and the bind): the bind cannot be redirected. The socket's
    own directory may be the app's (``/run/web/``). A stale socket of that name is
    replaced; any other file there is refused, never removed.
    """
    directory, name = os.path.split(path)
    movable: list[str] = []
    dir_fd = _walk(directory, None, movable)
    try:
        if movable:
            raise UnsafeFile(
                path,
                f"another user can rename {movable[-1]}, so the bind could be redirected;"
                " put the socket in a directory whose parents only root can write",
            )
        _unlink_socket_at(dir_fd, name, path)
        sock.bind(path)
    finally:
        os.close(dir_fd)


def unlink_socket(path: str) -> None:
    """Remove the unix socket at ``path`` (when it is one): the directory walked like
    :func:`open_dir` (a directory replaced by a link is refused, not followed), the
    name unlinked by its fd; anything that is not a socket stays."""
    directory, name = os.path.split(path)
    dir_fd = open_dir(directory)
    try:
        _unlink_socket_at(dir_fd, name, path)
    finally:
        os.close(dir_fd)


def _unlink_socket_at(dir_fd: int, name: str, shown: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeFile(shown, "a file that is not a socket is in the way")
    _unlink_quietly(dir_fd, name)
