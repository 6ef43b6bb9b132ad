"""The artifact unpacker: what a child running as the app's user does with an artifact.

:func:`unpack` runs in a child forked by the daemon that dropped to the app's user
(:func:`os_spawn.call_as`): it reads a verified artifact from an open file (the
daemon's private copy, already checked against its sha256) and writes it into the
new directory ``into`` of its working directory (``releases/``): a tar archive
(gzip, bzip2 or xz, detected), a zip archive, or one file (format ``file``: kept as
``into/NAME``, a ``.jar`` for instance). As the app's user, every file it creates
is the app's, and it can reach nothing that user could not. Modes are what tar gives
a non-root user: the archive's, less the umask (the app's ``umask``, else the
child's), less what the ``data`` filter removes.
:func:`copy_in` reads a local artifact path the same way (with the app's rights)
into the daemon's private copy.

Every entry is checked before a byte is written: an absolute name, a ``..``, a
link pointing out of the release, a device or FIFO, a setuid or setgid bit, more
than ``max_entries`` entries or ``max_bytes`` unpacked bytes are refused (tar's
``data`` extraction filter, and the same rules for zip). With ``same_as`` (an
existing release of that name), the result is compared with it: the same files
are fine, others are refused.

Results are ``(exit code, message)``: 0 done; :data:`EXIT_REFUSED` refused (the
message names the entry); :data:`EXIT_DIFFERS` differs from ``same_as``.
"""

from __future__ import annotations

import bz2  # noqa: F401  (imported now: the forked child must not import)
import filecmp
import gzip  # noqa: F401
import lzma  # noqa: F401
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable

EXIT_REFUSED = 1
EXIT_DIFFERS = 3


class Refused(Exception):
    """An entry that may not be unpacked (the message names it)."""


def _check_tar(tar: tarfile.TarFile, into: str, max_bytes: int, max_entries: int) -> None:
    total = 0
    dest = os.path.realpath(into)
    for count, member in enumerate(tar, 1):
        if count > max_entries:
            raise Refused(f"more than {max_entries} entries")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise Refused(f"{member.name}: a setuid or setgid bit")
        if member.name.startswith("/"):  # the filter would strip the slash: refuse instead
            raise Refused(f"{member.name}: an absolute path")
        try:
            tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise Refused(f"{member.name}: {exc}") from None
        total += member.size
        if total > max_bytes:
            raise Refused(f"more than {max_bytes} bytes unpacked (at {member.name})")


def _current_umask() -> int:
    """This process's umask: the app's (set by ``call_as``), else the one inherited."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _data_filter_with_umask(umask: int) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo]:
    """tar's ``data`` filter, then the modes as tar gives a non-root user: the archive's
    mode less the umask (tarfile itself chmods files to the archive's mode, umask or not).
    A directory keeps its owner's rwx: the unpacker writes into it, and the app's user
    compares and removes releases."""

    def apply(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        filtered = tarfile.data_filter(member, dest)
        if member.isdir():  # the data filter drops a directory's mode (mkdir's default)
            mode = (member.mode & 0o755 & ~umask) | 0o700
        elif member.isreg() or member.islnk():
            mode = filtered.mode & ~umask
        else:
            return filtered  # a symlink: no mode of its own
        return filtered.replace(mode=mode, deep=False)

    return apply


def _unpack_tar(src_fd: int, into: str, max_bytes: int, max_entries: int) -> None:
    with tarfile.open(fileobj=os.fdopen(src_fd, "rb", closefd=False), mode="r:*") as tar:
        _check_tar(tar, into, max_bytes, max_entries)
        tar.extractall(into, filter=_data_filter_with_umask(_current_umask()))


def _check_zip_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise Refused(f"{name}: an absolute path")
    if ".." in parts:
        raise Refused(f"{name}: a '..' would land outside the release")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a link" if kind == stat.S_IFLNK else "a device, FIFO or socket"
        raise Refused(f"{name}: {what}, not a plain file")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise Refused(f"{name}: a setuid or setgid bit")


def _unpack_zip(src_fd: int, into: str, max_bytes: int, max_entries: int) -> None:
    with zipfile.ZipFile(os.fdopen(src_fd, "rb", closefd=False)) as archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise Refused(f"more than {max_entries} entries")
        total = 0
        for info in infos:
            _check_zip_entry(info)
            total += info.file_size
            if total > max_bytes:
                raise Refused(f"more than {max_bytes} bytes unpacked (at {info.filename})")
        archive.extractall(into)


def _keep_file(src_fd: int, into: str, name: str) -> None:
    if not name or name in (".", "..") or "/" in name:
        raise Refused(f"{name!r}: not a plain file name")
    with (
        os.fdopen(src_fd, "rb", closefd=False) as src,
        open(os.path.join(into, name), "xb") as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)


def _same_tree(a: str, b: str) -> bool:
    """The same names, kinds, link targets and file contents (nothing followed)."""
    try:
        left = {e.name: e for e in os.scandir(a)}
        right = {e.name: e for e in os.scandir(b)}
    except OSError:
        return False
    if left.keys() != right.keys():
        return False
    for name, x in left.items():
        y = right[name]
        sx, sy = x.stat(follow_symlinks=False), y.stat(follow_symlinks=False)
        if stat.S_IFMT(sx.st_mode) != stat.S_IFMT(sy.st_mode):
            return False
        if stat.S_ISLNK(sx.st_mode):
            if os.readlink(x.path) != os.readlink(y.path):
                return False
        elif stat.S_ISDIR(sx.st_mode):
            if not _same_tree(x.path, y.path):
                return False
        elif not filecmp.cmp(x.path, y.path, shallow=False):
            return False
    return True


def unpack(
    fmt: str,
    name: str,
    into: str,
    max_bytes: int,
    max_entries: int,
    same_as: str | None,
    src_fd: int,
    dir_fd: int,
) -> tuple[int, str]:
    """Unpack the artifact open at ``src_fd`` into new directory ``into`` of ``dir_fd``."""
    os.lseek(src_fd, 0, os.SEEK_SET)
    try:
        os.fchdir(dir_fd)
        os.mkdir(into, 0o755)
        if fmt == "tar":
            _unpack_tar(src_fd, into, max_bytes, max_entries)
        elif fmt == "zip":
            _unpack_zip(src_fd, into, max_bytes, max_entries)
        else:
            _keep_file(src_fd, into, name)
    except Refused as exc:
        return EXIT_REFUSED, f"refused: {exc}"
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return EXIT_REFUSED, f"cannot unpack {name}: {exc}"
    if same_as is not None and not _same_tree(into, same_as):
        return EXIT_DIFFERS, f"release {same_as} exists with other contents"
    return 0, ""


def copy_in(path: str, dst_fd: int, max_bytes: int) -> tuple[int, str]:
    """Copy the regular file ``path`` (opened with this process's rights, never a FIFO
    or device) into ``dst_fd``, at most ``max_bytes``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return EXIT_REFUSED, f"{path}: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return EXIT_REFUSED, f"{path}: not a regular file"
        if st.st_size > max_bytes:
            return EXIT_REFUSED, f"{path}: {st.st_size} bytes, over the limit of {max_bytes} bytes"
        os.set_blocking(fd, True)
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > max_bytes:
                return EXIT_REFUSED, f"{path}: over the limit of {max_bytes} bytes"
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view) :]
    except OSError as exc:
        return EXIT_REFUSED, f"{path}: {exc.strerror}"
    finally:
        os.close(fd)
    return 0, str(size)
