"""Directories nsnet writes as root, checked as ssh's StrictModes checks ~/.ssh.

nsnet runs as root and writes into its state directory, the netns directory
and ``/etc/netns/NS/``.  If another user owns or can write any directory on
the way (or a symlink on the way), that user can plant symlinks or forged
records and turn nsnet's writes and deletions against any file of the
machine.  So, before use:

* every existing component of the path, from ``/`` down, must be owned by
  root (or the caller) and not writable by group or others -- a sticky
  directory such as ``/tmp`` is allowed *above* the directory itself, since
  nobody else can rename or remove what root made in it;
* a symlink on the way must be owned by root (or the caller); it is then
  followed and its target checked the same way;
* files in a checked directory are written relative to an open directory
  descriptor, never through a symlink (``O_NOFOLLOW``), temporary files
  under fresh names with ``O_EXCL``, then renamed into place;
* a path named by a record is deleted only when it lies directly in the
  directory where nsnet makes such things (:func:`require_inside`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys

from ..errors import PermissionDenied

__all__ = ["check_trusted_dir", "ensure_trusted_dir", "open_private", "read_marked_file",
           "read_text_at", "require_inside", "write_atomic_at", "write_marked_file"]

MAX_SYMLINKS = 40  # as the kernel's path walk


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _refuse(what: str, path: str, why: str) -> PermissionDenied:
    return PermissionDenied(f"{what} {path}: {why}; nsnet refuses to use it (as ssh's "
                            "StrictModes): make it root's and not writable by others "
                            "(chown root; chmod go-w)")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def check_trusted_dir(path: str, what: str = "directory") -> None:
    """Raise PermissionDenied unless every existing component of ``path`` is
    trusted (see the module's docstring).  A missing tail is fine: nsnet
    creates it under a trusted parent, and :func:`ensure_trusted_dir` checks
    again after creating it."""
    pending = _parts(os.path.abspath(path))
    current, hops = "/", 0
    _check_component(what, path, "/", os.lstat("/"), last=not pending)
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            current = os.path.dirname(current)
            continue
        nxt = os.path.join(current, comp)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            if not _owner_ok(st):
                raise _refuse(what, path, f"it goes through the symlink {nxt} owned by "
                                          f"uid {st.st_uid}")
            hops += 1
            if hops > MAX_SYMLINKS:
                raise _refuse(what, path, "too many levels of symlinks")
            target = os.readlink(nxt)
            pending = _parts(target) + pending
            if target.startswith("/"):
                current = "/"
            continue
        _check_component(what, path, nxt, st, last=not pending)
        current = nxt


def _check_component(what: str, path: str, comp: str, st: os.stat_result, last: bool) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(what, path, f"{comp} is not a directory")
    if not _owner_ok(st):
        raise _refuse(what, path, f"{comp} is owned by uid {st.st_uid}")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (last or not st.st_mode & stat.S_ISVTX):
        who = "others" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
        raise _refuse(what, path, f"{comp} is writable by {who} "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o})")


def ensure_trusted_dir(path: str, what: str = "directory", mode: int = 0o755) -> None:
    """Check, create if missing (with ``mode``), check again."""
    check_trusted_dir(path, what)
    if not os.path.isdir(path):
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
        except OSError as exc:
            raise PermissionDenied(f"cannot create {what} {path}: {exc.strerror}") from None
        check_trusted_dir(path, what)


def require_inside(directory: str, path: str, what: str = "path") -> str:
    """``path`` if it names an entry directly inside ``directory`` (a plain
    file name, no symlink on the way, not the directory itself); otherwise
    PermissionDenied.  For paths read from records before deleting them: a
    forged record must not make nsnet delete or unmount anything else."""
    name = os.path.basename(path)
    inside = (bool(name) and name not in (".", "..")
              and os.path.realpath(os.path.dirname(os.path.abspath(path)))
              == os.path.realpath(directory))
    if not inside:
        raise PermissionDenied(f"{what} {path!r} does not lie in {directory}, where nsnet "
                               "makes such things; nsnet leaves it alone")
    return os.path.join(os.path.realpath(directory), name)


def open_private(path: str, flags: int = os.O_RDWR | os.O_CREAT, mode: int = 0o600) -> int:
    """Open (creating) a file such as a pid or lock file, never through a symlink."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def read_text_at(dir_fd: int, name: str) -> str | None:
    """A regular file's text in an open directory; None if missing.  A
    symlink (ELOOP) or any non-regular file raises OSError."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        return f.read().decode(errors="replace")


def write_atomic_at(dir_fd: int, name: str, text: str | bytes, mode: int = 0o644) -> None:
    """Write ``name`` in an open directory: a fresh temporary name (O_EXCL,
    O_NOFOLLOW), then rename over -- which replaces a symlink, never follows it."""
    # secrets.token_hex(6) is this very call; importing secrets (hashlib,
    # hmac) was ~4 ms of every command's start
    tmp = f".{name}.nsnet-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _open_subdir(base_fd: int, sub: str, create: bool) -> int | None:
    """``sub`` of an open directory, not through a symlink, and trusted."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(sub, 0o755, dir_fd=base_fd)
    try:
        fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=base_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP / ENOTDIR: a symlink or a file was planted there
        raise OSError(exc.errno, f"{sub} is not a plain directory; nsnet leaves it alone") \
            from None
    st = os.fstat(fd)
    if not _owner_ok(st) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise OSError(errno.EPERM, f"{sub} is owned or writable by another user "
                                   f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); "
                                   "nsnet leaves it alone")
    return fd


def write_marked_file(base: str, sub: str, name: str, text: str | None, mark: str) -> bool:
    """Make ``base/sub/name`` hold ``text`` (None: remove it, and ``sub`` if
    empty) -- only if it is missing or a regular file starting with ``mark``
    (one nsnet wrote).  Someone else's file, or a symlink, is left alone.
    ``base`` must have passed :func:`check_trusted_dir`.  True if nsnet's
    file is there afterwards."""
    _plain_names(sub, name)
    try:
        base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if text is None:
            return False
        raise
    try:
        fd = _open_subdir(base_fd, sub, create=text is not None)
        if fd is None:
            return False
        try:
            try:
                current = read_text_at(fd, name)
            except OSError:
                return False  # a symlink or special file: not nsnet's
            if current is not None and not current.startswith(mark):
                return False
            if current == text:
                return text is not None
            # --explain (nsnet.kernel.record): looked up, not imported, so the
            # state layer does not pull the kernel layer in
            recorder = sys.modules.get("nsnet.kernel.record")
            rec = recorder.active() if recorder else None
            if rec is not None:
                rec.file(os.path.join(base, sub, name), text)
            if text is None:
                os.unlink(name, dir_fd=fd)
            else:
                write_atomic_at(fd, name, text)
        finally:
            os.close(fd)
        if text is None:
            with contextlib.suppress(OSError):
                os.rmdir(sub, dir_fd=base_fd)  # only if empty
        return text is not None
    finally:
        os.close(base_fd)


def read_marked_file(base: str, sub: str, name: str) -> str | None:
    """The text of ``base/sub/name`` if it is a regular file reached without
    a symlink; None otherwise (missing, a symlink, a special file)."""
    _plain_names(sub, name)
    try:
        base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=base_fd)
    except OSError:
        return None
    finally:
        os.close(base_fd)
    try:
        return read_text_at(fd, name)
    except OSError:
        return None
    finally:
        os.close(fd)


def _plain_names(*names: str) -> None:
    for n in names:
        if not n or n in (".", "..") or "/" in n or "\0" in n:
            raise OSError(errno.EINVAL, f"{n!r} is not a plain file name")
