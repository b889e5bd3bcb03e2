"""Network namespaces the iproute2 way, without forking.

A namespace is a file bind-mounted from ``/proc/thread-self/ns/net`` under a
directory (``/run/netns`` by default, so ``ip netns`` sees it).  Creation
unshares the calling *thread* only and switches it back at once; nothing
here depends on which namespace the process started in.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from . import record

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_SHARED, MS_SLAVE = 0x1000, 0x4000, 1 << 20, 1 << 19
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``subprocess.Popen(preexec_fn=...)``: the child is SIGKILLed when
    the process that started it dies, however it dies (a helper such as
    doctor's ``nft monitor trace`` must not outlive a SIGKILLed nsnet)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


@dataclass
class Netns:
    """An open handle on a network namespace (keeps it alive while open)."""

    name: str
    path: str
    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_netns(path: str, name: str | None = None) -> Netns:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_dev != _nsfs_dev():
            raise OSError(errno.EINVAL, f"{path} is not a network namespace")
        setns_probe(fd)
    except BaseException:
        os.close(fd)
        raise
    record.remember_netns(fd, path)
    return Netns(name or os.path.basename(path), path, fd)


def setns_probe(fd: int) -> None:
    """Reject files that are not network namespaces (setns would say EINVAL)."""
    with entered(fd):
        pass


def current_netns() -> Netns:
    return open_netns("/proc/thread-self/ns/net", "(current)")


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block with this thread inside namespace ``fd``, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def mount_bind(src: str, target: str) -> None:
    """Bind-mount a namespace file (e.g. /proc/PID/ns/net) onto ``target``."""
    mount(src, target, "none", MS_BIND)


def ensure_netns_dir(netns_dir: str) -> None:
    """Make the directory a shared mount, as ``ip netns add`` does, so mounts
    made in other mount namespaces propagate."""
    os.makedirs(netns_dir, mode=0o755, exist_ok=True)
    try:
        mount("none", netns_dir, None, MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        mount(netns_dir, netns_dir, None, MS_BIND | MS_REC)
        mount("none", netns_dir, None, MS_SHARED | MS_REC)


# --------------------------------------------------------------- sysctls
# Why sysctls go through a private proc instance.
#
# /proc/sys/net/... resolves against the namespace of the thread looking it
# up, and the dcache keeps one dentry per namespace for the same name under
# the same parent of one proc superblock: every lookup walks them all (the
# names hash alike, proc_sys_compare tells them apart).  Through the host's
# /proc, opening any /proc/sys/net path from a new namespace therefore cost
# more with every namespace that looked one up before -- measured on 6.18,
# 6 rounds of 500 namespaces each writing disable_ipv6 at birth: 1.0 ->
# 3.2 ms per namespace (another run 1.2 -> 4.6), which made the 5th network
# of 1000 endpoints 3-4x as slow to create as the 1st (bench/results/scale.md).
#
# A fresh proc superblock starts with an empty dcache, and unmounting it
# frees its dentries.  The new mount API gives one without touching any
# mount table: fsopen("proc") + fsmount() returns a *detached* mount, an fd
# that belongs to no mount namespace (nothing appears in /proc/*/mountinfo,
# nothing can propagate to the host) and that vanishes when closed.  Paths
# are opened relative to it (openat), from whichever namespace the thread
# is in, exactly as before.  It is renewed every _PROC_RENEW lookups, so
# its dcache never holds more than that many namespaces' entries: same
# benchmark, renewed every 50, flat 0.53-0.61 ms per namespace; a new
# instance costs ~0.1-0.25 ms.  (Considered first: a thread with its own
# mount namespace and a proc mounted on a private mount point -- more
# moving parts, and a mount-propagation mistake would leak mounts into
# the host; a detached mount cannot.)  Where the new mount API is missing
# or refused (kernels before 5.2, seccomp, no CAP_SYS_ADMIN) the host's
# /proc is used as before.
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432   # same on every arch (unified table)
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_CMD_CREATE = 6
_PROC_RENEW = 64


class _ProcSys:
    """A private, regularly renewed proc instance for /proc/sys lookups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd = -1
        self._uses = 0
        self._usable = True

    def _new_mount(self) -> int:
        fs = _libc.syscall(_SYS_FSOPEN, b"proc", _FSOPEN_CLOEXEC)
        if fs < 0:
            return -1
        try:
            if _libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0) != 0:
                return -1
            return int(_libc.syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0))
        finally:
            os.close(fs)

    def _dir(self) -> int:
        """The mount's fd, renewed when due; -1: use the host's /proc."""
        if self._fd >= 0 and self._uses < _PROC_RENEW:
            return self._fd
        if self._fd >= 0:
            os.close(self._fd)   # the detached mount and its dentries go with it
            self._fd = -1
        if self._usable:
            self._fd = self._new_mount()
            self._usable = self._fd >= 0
            self._uses = 0
        return self._fd

    def open(self, key: str, flags: int) -> int:
        """Open /proc/sys/``key`` as this thread's namespace sees it."""
        with self._lock:
            d = self._dir()
            self._uses += 1
            if d < 0:
                return os.open("/proc/sys/" + key, flags | os.O_CLOEXEC)
            return os.open("sys/" + key, flags | os.O_CLOEXEC, dir_fd=d)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


PROC_SYS = _ProcSys()


def read_sysctl_here(key: str) -> str:
    """A sysctl (path under /proc/sys) as this thread's namespace sees it."""
    fd = PROC_SYS.open(key, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def write_sysctls_here(values: dict[str, str]) -> None:
    """Write sysctls (keys as paths under /proc/sys) in this thread's netns.

    /proc/sys/net resolves against the writing thread's namespace (looked
    up through a private proc instance: see the comment above).  Missing
    keys (e.g. IPv6 compiled out) are skipped."""
    written = {}
    for key, value in values.items():
        try:
            fd = PROC_SYS.open(key, os.O_WRONLY)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        written[key] = value
    rec = record.active()
    if rec is not None:
        rec.sysctls(record.ns_inode_here(), written)


def create_netns(netns_dir: str, name: str, sysctls: dict[str, str] | None = None) -> Netns:
    """Create and bind-mount a fresh namespace; EEXIST if the name is taken.
    ``sysctls`` are written while this thread is inside anyway (free setns)."""
    path = os.path.join(netns_dir, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            mount("/proc/thread-self/ns/net", path, "none", MS_BIND)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            rec = record.active()
            if rec is not None:
                record.remember_netns(fd, path)
                rec.ns_created(path)
            if sysctls:
                write_sysctls_here(sysctls)
        finally:
            setns(home)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(home)
    return Netns(name, path, fd)


def remove_netns(path: str) -> None:
    """Unmount and unlink; the kernel frees it once nothing else holds it.

    Only a namespace mount is unmounted (never through a symlink), and only
    an empty regular file -- what a mount point is once unmounted -- is
    unlinked: a path from a forged or stale record cannot make nsnet unmount
    /proc or delete a file with content."""
    if _is_netns_mount_here(path):
        rec = record.active()
        if rec is not None:
            rec.ns_removed(path)
        try:
            umount(path, MNT_DETACH | UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _is_netns_mount_here(path: str) -> bool:
    """A namespace bind mount at ``path`` itself, not behind a symlink."""
    try:
        return not stat.S_ISLNK(os.lstat(path).st_mode) and is_netns_mount(path)
    except OSError:
        return False


_NSFS_DEV: list[int] = []


def _nsfs_dev() -> int:
    """The device of nsfs (every namespace file's), once per process: ``ns
    ls`` asks it of every entry of the netns directory."""
    if not _NSFS_DEV:
        _NSFS_DEV.append(os.stat("/proc/self/ns/net").st_dev)
    return _NSFS_DEV[0]


def is_netns_mount(path: str) -> bool:
    try:
        return os.stat(path).st_dev == _nsfs_dev()
    except OSError:
        return False


def list_netns(netns_dir: str) -> list[str]:
    try:
        names = os.listdir(netns_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_netns_mount(os.path.join(netns_dir, n)))


def exec_in_netns(ns_path: str, argv: list[str], etc_dir: str | None) -> None:
    """Replace this process by ``argv`` inside the namespace, like
    ``ip netns exec``: own mount namespace, /sys remounted for the new
    netns, and /etc/netns/NAME/* bind-mounted over /etc/*."""
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    setns(fd)
    os.close(fd)
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_SLAVE | MS_REC)
    try:
        umount("/sys")
        mount(os.path.basename(ns_path), "/sys", "sysfs", 0)
    except OSError:
        pass  # as iproute2: a read-only /sys is not fatal
    if etc_dir and os.path.isdir(etc_dir):
        for entry in os.listdir(etc_dir):
            target = os.path.join("/etc", entry)
            if os.path.exists(target):
                mount(os.path.join(etc_dir, entry), target, "none", MS_BIND)
    os.execvp(argv[0], argv)
