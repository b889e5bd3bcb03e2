"""Embedded DNS: the engine's side (start, poke, stop the server; resolv.conf).

The server (:mod:`nsnet.dns.server`, which needs dnslib) runs as its own
process, started detached from the nsnet command that first needs it, so it
outlives that command.  It is born inside the host namespace because it is
spawned while the calling thread sits there.  Liveness is the ``flock`` the
server holds on ``STATE_DIR/dns.pid``; the server says what it serves, and
what it could not bind, in ``STATE_DIR/dns.status.json`` (with a generation
number that grows at each reload).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

from .. import kernel as k
from ..crash import crashpoint
from ..kernel import record
from ..model import Endpoint, Network

__all__ = ["RESOLV_MARK", "DnsControl", "dns_networks", "host_resolv_confs", "resolv_conf",
           "server_argv", "stop_daemon", "stop_daemons", "stop_spawned"]

STATUS, PIDFILE, LOG = "dns.status.json", "dns.pid", "dns.log"
# The PID of the server just started, written by its parent at once: until
# the server holds its pid file's lock (after its imports, up to a second on
# a loaded machine) this is the only way a stop finds it.
SPAWNED = "dns.spawned"
RESOLV_MARK = "# nsnet: embedded DNS of network"
WAIT = 5.0  # seconds to wait for the server to report


def resolv_conf(net: Network) -> str:
    """The endpoint's resolv.conf: the network's embedded DNS on each of its
    gateways (IPv4 first; an IPv6-only network's IPv6 gateway alone)."""
    servers = "".join(f"nameserver {gw}\n" for gw in net.gateways)
    return f"{RESOLV_MARK} {net.name}\n{servers}options ndots:0\n"


def server_argv(state_dir: str, resolv_paths: Iterable[str] = ()) -> list[str]:
    """The server's command line.  ``-I`` (isolated mode): a root daemon must
    import nsnet from where it is installed, never from the caller's working
    directory, ``PYTHONPATH`` or user site (a package named ``nsnet`` there
    would otherwise run as root); it is started in ``/`` for the same reason."""
    return [sys.executable, "-I", "-m", "nsnet.dns", os.path.abspath(state_dir),
            *map(os.path.abspath, resolv_paths)]


def host_resolv_confs(host_netns: str | None, etc_netns_dir: str) -> list[str]:
    """Where the host namespace's resolv.conf is, in order: as ``ip netns
    exec HOST`` shows it (ETC_NETNS_DIR/HOST/resolv.conf) when nsnet's host is
    a named namespace, else (or when that file is missing) /etc/resolv.conf."""
    if host_netns is None:
        return ["/etc/resolv.conf"]
    name = os.path.basename(host_netns.rstrip("/"))
    return [os.path.join(etc_netns_dir, name, "resolv.conf"), "/etc/resolv.conf"]


class DnsControl:
    def __init__(self, state_dir: str, host: k.Netns, host_netns: str | None = None,
                 etc_netns_dir: str = "/etc/netns") -> None:
        self.state_dir = state_dir
        self.host = host
        self.resolv_paths = host_resolv_confs(host_netns, etc_netns_dir)  # the host's upstreams

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def pid(self) -> int | None:
        """The running server's PID, or None (its lock on the pid file says)."""
        try:
            fd = os.open(self._path(PIDFILE), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(ValueError):
                return int(os.read(fd, 32).decode().strip() or 0) or None
            return None
        finally:
            os.close(fd)
        return None  # nobody holds it: no server

    def status(self) -> dict:
        with contextlib.suppress(OSError, ValueError), open(self._path(STATUS)) as f:
            return json.load(f)
        return {}

    def sync(self, networks: set[str]) -> dict[str, str]:
        """Make the server run iff some ``networks`` want DNS, up to date;
        returns the networks it cannot serve, with why.  It waits for the
        server only when it starts, or has a network to begin serving (to
        report a bind failure); otherwise the server's own check of the
        state's generation shows it every change before the next answer."""
        pid = self.pid()
        _explain(pid, networks, self.state_dir)
        if not networks:
            if pid:  # it reloads, finds nothing to serve, and exits after a short linger
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
            return {}
        current = self.status() if pid else {}
        served = current.get("networks", {})
        if pid and networks <= set(served):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
            # On every path, so that a command passes the same crash points
            # whether or not the server happened to reload since the last one
            # (the fault-injection harness counts them once, then kills by number).
            crashpoint("dns:signalled")
            return {n: s["error"] for n, s in served.items() if n in networks and s.get("error")}
        before = current.get("generation", 0)
        if pid:
            os.kill(pid, signal.SIGHUP)
        else:
            pid = self._start()
        crashpoint("dns:signalled")
        status = self._wait(pid, before)
        return {name: s["error"] for name, s in status.get("networks", {}).items()
                if s.get("error")}

    def _start(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(STATUS))
        log = os.open(self._path(LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                      | os.O_CLOEXEC,
                      0o600)
        try:
            with k.entered(self.host.fd):  # the child is born in the host namespace
                proc = subprocess.Popen(server_argv(self.state_dir, self.resolv_paths), cwd="/",
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=log, start_new_session=True, close_fds=True)
        finally:
            os.close(log)
        _write_private(self._path(SPAWNED), f"{proc.pid}\n")
        return proc.pid

    def _wait(self, pid: int, before: int) -> dict:
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            status = self.status()
            if status.get("pid") == pid and status.get("generation", 0) > before:
                return status
            time.sleep(0.001)  # a reload takes the server about a millisecond
        return {}

    def stop(self) -> None:
        stop_daemon(self._path(PIDFILE))
        stop_spawned(self.state_dir)


def _explain(pid: int, networks: set[str], state_dir: str) -> None:
    """--explain (nsnet.kernel.record): the server is a process, not kernel
    state, so it is told as a comment, never as a command to replay."""
    rec = record.active()
    if rec is None:
        return
    names = ", ".join(sorted(networks))
    if not networks:
        text = f"nsnet's DNS server (pid {pid}) is told to reload: nothing to serve, it exits"
    elif pid:
        text = f"nsnet's DNS server (pid {pid}) is told to reload (SIGHUP): serves {names}"
    else:
        text = (f"nsnet starts its DNS server for {names} in the host namespace (a process, "
                f"not kernel state): python -I -m nsnet.dns {state_dir} ...")
    if networks or pid:
        rec.comment(text)


def stop_daemon(pidfile: str, wait: float = WAIT) -> None:
    """SIGTERM the process holding ``pidfile``'s lock (nsnet's daemons -- the
    DNS server, the CNI agent -- hold it for life) and wait until it is gone.
    By PID, from the daemon's own file: never by name."""
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        text = os.read(fd, 32).decode().strip()
        pid = int(text) if text.isdigit() else 0
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        if held and pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    finally:
        os.close(fd)
    if pid and (held or _is_nsnet(pid)):
        _wait_gone(pid, wait)  # it may still be exiting after letting go of the lock


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def stop_spawned(state_dir: str, wait: float = WAIT) -> None:
    """SIGTERM a DNS server started for ``state_dir`` that may not hold its
    pid file yet (:data:`SPAWNED`), then forget it.  By PID, and only if that
    PID still runs ``nsnet.dns`` for this very state directory (a PID the
    kernel reused for anything else is left alone)."""
    path = os.path.join(state_dir, SPAWNED)
    try:
        with open(path, "rb") as f:
            text = f.read(32).strip()
            written = os.fstat(f.fileno()).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return
    pid = int(text) if text.isdigit() else 0
    if pid and (_serves(pid, state_dir) or _started_by(pid, written)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, wait)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _started_by(pid: int, written: float) -> bool:
    """Whether ``pid`` is the very process whose PID was written at
    ``written`` (epoch seconds): it already ran then (a PID is never reused
    while its process lives).  Needed between fork and exec, when the child
    still shows its parent's command line."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(") ", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= written + 1.0  # btime: whole seconds


def _serves(pid: int, state_dir: str) -> bool:
    """Whether ``pid`` is an nsnet DNS server of ``state_dir`` (its argv)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"nsnet.dns" in argv and os.fsencode(os.path.abspath(state_dir)) in argv


def _is_nsnet(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"nsnet" in f.read()
    except OSError:
        return False


def _wait_gone(pid: int, wait: float) -> None:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] in "ZX":
                    return  # exited; its parent reaps it
        except (OSError, IndexError):
            return
        time.sleep(0.005)


def stop_daemons(state_dir: str) -> None:
    """Stop the DNS server and the CNI agent of a state directory."""
    try:  # CNI agents: one per mount+network namespace (cni-MNT-NET.pid)
        agents = sorted(n for n in os.listdir(state_dir)
                        if n.startswith("cni") and n.endswith(".pid"))
    except OSError:
        agents = []
    for name in (PIDFILE, *agents):
        stop_daemon(os.path.join(state_dir, name))
    stop_spawned(state_dir)


def wants_dns(networks: Iterable[Network]) -> bool:
    return bool(dns_networks(networks))


def dns_networks(networks: Iterable[Network]) -> set[str]:
    """The networks the DNS server must serve: DNS on, at least one endpoint."""
    return {n.name for n in networks if n.dns and n.endpoints}


def resolver_network(eps: list[Endpoint], nets: dict[str, Network]) -> Network | None:
    """The network whose gateway answers a namespace's DNS: its first
    (oldest) endpoint on a network with DNS on."""
    for ep in sorted(eps, key=lambda e: e.created):
        net = nets.get(ep.network)
        if net and net.dns:
            return net
    return None
