"""What every resource of the engine needs, and nothing above it.

The engine is layered (see README "Design"):

    facade (:mod:`nsnet.engine.facade`)      lock -> plan -> journal -> apply -> commit
    resources (namespaces, networks, endpoints, ports, probes)
    services (firewall_sync, dns_sync) and the typed journal (intents)
    context (this module): host handles, store, lock, notify, paths

A resource imports this module (and the services), never the facade nor
another resource: where an operation spans resources (``connect`` creates
namespaces, veths, firewall entries and resolv.conf files), the facade
composes them.  That keeps one resource readable in one file.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from .. import kernel as k
from ..config import DEFAULT_STORE_TIMEOUT
from ..dns import DnsControl
from ..errors import InvalidInput, KernelError, NotFound, PermissionDenied
from ..firewall import FirewallDriver
from ..model import validate_netns_name
from ..state import StateLock, Store

__all__ = ["Context", "Progress", "Steps", "kernel_errors", "refusal"]

MAX_BRIDGE_PORTS = 1023  # the kernel's BR_MAX_PORTS - 1 (port 0 is reserved)
CHUNK = 256  # endpoints per kernel batch: bounds open fds and netlink buffers
NEIGH_TIDY_ABOVE = 16  # check: forget probe-made ARP entries in larger networks
IPV6_DEFAULT_OFF = "net/ipv6/conf/default/disable_ipv6"
IP_FORWARD = "net/ipv4/ip_forward"

# progress(done, total): steps are namespaces created plus endpoints configured
Progress = Callable[[int, int], None]


def random_mac() -> str:
    """Locally administered unicast MAC (02:xx:...)."""
    octets = [0x02] + [random.randrange(256) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


def new_id() -> str:
    """A random id of network or endpoint: what ``uuid.uuid4().hex`` gives
    (32 hex digits, version 4 and variant bits set as it sets them), without
    importing uuid and platform (~3 ms of an API user's start, #15)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def transient_group() -> int:
    """A link group used only for the duration of one operation, so all of
    its links can be deleted with one RTM_DELLINK (one RCU wait)."""
    return random.randrange(1 << 30, 1 << 31)


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("nsnet needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): "
                               "run it with sudo")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def no_ipv6(ifname: str) -> str:
    # IPv4-only networks: no IPv6 autoconfiguration traffic flooding the bridge.
    # The namespace side for the traffic; host ends too, for the kernel's
    # cost (engine/endpoints.py host_ends_without_ipv6).
    return f"net/ipv6/conf/{ifname}/disable_ipv6"


@contextmanager
def kernel_errors(what: str) -> Iterator[None]:
    """Translate kernel OSErrors into KernelError at the engine boundary."""
    try:
        yield
    except OSError as exc:
        raise KernelError(f"{what}: {exc.strerror or exc}", exc.errno) from None


class Steps:
    """Reports progress every few percent, not on every step."""

    def __init__(self, total: int, report: Progress | None) -> None:
        self.total, self.report, self.done, self.told = total, report, 0, 0
        self.every = max(1, total // 50)

    def advance(self) -> None:
        self.done += 1
        if self.report and (self.done - self.told >= self.every or self.done == self.total):
            self.report(self.done, self.total)
            self.told = self.done


def refusal(bad: list[str], one: str, many: str, names: list[str], verb: str,
            kind: str = "namespace") -> str:
    """The rule of every bulk command: all or nothing.  The error names every
    offender, and, for a bulk request, says that nothing was done."""
    quoted = ", ".join(repr(n) for n in bad)
    text = f"{kind} {quoted} {one}" if len(bad) == 1 else f"{kind}s {quoted} {many}"
    if len(names) > 1:
        rest = [n for n in names if n not in bad]
        text += f"; nothing was {verb}" + (
            f" ({', '.join(repr(n) for n in rest)} left as they were: all or nothing)"
            if rest else "")
    return text


def unique_ns_names(names: list[str]) -> list[str]:
    if not names:
        raise InvalidInput("no namespace name given")
    for name in names:
        validate_netns_name(name)
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise InvalidInput(f"namespace {dup[0]!r} is named twice")
    return list(names)


def labels(items: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for key, value in items:
        if not key or any(c.isspace() or not c.isprintable() for c in key):
            raise InvalidInput(f"label key {key!r} must be non-empty, without spaces or "
                               "control characters")
        out[key] = value  # the last one wins, as Docker's
    return tuple(out.items())


class Context:
    """Handles shared by the resources: the host namespace, its (lazily
    opened) netlink socket and firewall driver, the state store and lock,
    the DNS control and the directories.  Opening it opens files; it changes
    nothing in the kernel."""

    def __init__(self, host: k.Netns, host_netns: str | None, store: Store, lock: StateLock,
                 netns_dir: str, etc_netns_dir: str, dns: DnsControl,
                 firewall: FirewallDriver | None = None,
                 store_timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self.host = host
        self.host_netns = host_netns
        self.store = store
        self.lock = lock
        self.netns_dir = netns_dir
        self.etc_netns_dir = etc_netns_dir
        self.dns = dns
        self._firewall = firewall
        self.store_timeout = store_timeout  # the cluster store's, per request (#17)
        self._rtnl: k.Rtnl | None = None
        self._reader: tuple[int, k.InsideReader] | None = None  # (its thread, it)

    def close(self) -> None:
        if self._rtnl:
            self._rtnl.close()
        self.host.close()
        self.store.close()

    def notify(self, message: str) -> None:
        self.lock.notify(message)

    @property
    def rtnl(self) -> k.Rtnl:
        if self._rtnl is None:
            self._rtnl = k.open_rtnl(self.host)
        return self._rtnl

    @property
    def firewall(self) -> FirewallDriver:
        if self._firewall is None:
            from ..firewall.nft import NftablesDriver

            self._firewall = NftablesDriver(self.host)
        return self._firewall

    # ------------------------------------------------------ namespaces
    def ns_path(self, name: str) -> str:
        # names also come from records: a plain file name, never a way out of netns_dir
        return os.path.join(self.netns_dir, validate_netns_name(name))

    def ns_exists(self, name: str) -> bool:
        """Whether ``name`` is a mounted namespace under netns_dir."""
        return k.is_netns_mount(self.ns_path(name))

    def open_ns(self, name: str) -> k.Netns:
        validate_netns_name(name)
        try:
            return k.open_netns(self.ns_path(name), name)
        except OSError:
            raise NotFound(f"namespace {name!r} does not exist") from None

    def snapshot(self, netns: str | None = None) -> k.Snapshot:
        """Links, addresses and routes of a namespace (the host's if None)."""
        if netns is None:
            return k.snapshot(self.host)
        ns = self.open_ns(netns)
        try:
            return k.snapshot(ns)
        finally:
            ns.close()

    @contextmanager
    def inside_views(self) -> Iterator[None]:
        """While open, :meth:`endpoint_view` reads every namespace through one
        :class:`k.InsideReader` (reconcile reads thousands in a row; the
        reader belongs to this thread, which is the one that reads)."""
        with k.InsideReader() as reader:
            self._reader = (threading.get_ident(), reader)
            try:
                yield
            finally:
                self._reader = None

    def endpoint_view(self, netns: str, ifname: str, version: int = 4) -> k.Snapshot:
        """Only what a reconcile checks of one endpoint inside (k.endpoint_view)."""
        validate_netns_name(netns)
        try:
            if self._reader is not None and self._reader[0] == threading.get_ident():
                return self._reader[1].view(self.ns_path(netns), ifname, version)
            return k.endpoint_view_at(self.ns_path(netns), ifname, version)
        except k.NetlinkError:
            raise
        except OSError:  # no such file, or not a namespace (EINVAL on entering)
            raise NotFound(f"namespace {netns!r} does not exist") from None

    def snapshot6(self, netns: str) -> k.Snapshot:
        """Links, IPv6 addresses and main-table IPv6 routes of a namespace."""
        ns = self.open_ns(netns)
        try:
            return k.snapshot6(ns)
        finally:
            ns.close()

    def handed_off(self) -> set[str]:
        """Names of endpoints whose inside another manager (Docker) holds."""
        return self.store.handed_off()  # by the path index

    # ------------------------------------------------------ host links
    def delete_links(self, names: list[str]) -> None:
        """One RTM_DELLINK for all: move them to a transient group, delete it."""
        if not names:
            return
        with kernel_errors("deleting veth pairs"):
            if len(names) == 1:
                self.rtnl.run([k.req_del_link(name=names[0])])
                return
            group = transient_group()
            self.rtnl.batch([k.req_set_link(name, group=group) for name in names])
            err, detail = self.rtnl.batch([k.req_del_group(group)]).errors[0]
            if err and err != errno.ENODEV:  # ENODEV: all were gone already
                raise k.NetlinkError(err, "delete veth pairs", detail)

    def delete_group(self, group: int) -> None:
        """Delete every host link of a network's link group (one RTM_DELLINK).
        Nothing there (ENODEV) is fine.  The group is nsnet's mark, as the
        alias is: a deletable link someone else put into it goes with it
        (the kernel cannot list a group without a dump of every link; the
        reconcile check names such a link beforehand).  The kernel refuses
        the whole request (EOPNOTSUPP) if a link of the group cannot be
        deleted at all (lo, a physical NIC): then nothing is deleted, and
        the caller's deletion by name (with its ownership check) does the
        work."""
        err, detail = self.rtnl.batch([k.req_del_group(group)]).errors[0]
        if err == errno.EOPNOTSUPP:
            self.notify(f"nsnet: warning: link group {group} holds a link that cannot be "
                        "deleted (not nsnet's): deleting the network's links one by one")
        elif err and err != errno.ENODEV:
            raise KernelError(f"deleting link group {group}: {detail or os.strerror(err)}", err)

    def forwarding_on(self) -> bool:
        """IPv4 forwarding in the host namespace."""
        with kernel_errors("reading net.ipv4.ip_forward"):
            return k.read_sysctl(self.host, IP_FORWARD) == "1"

    def restore_forwarding_off(self) -> None:
        """Rollback of the network that turned forwarding on: off again."""
        with kernel_errors("restoring net.ipv4.ip_forward=0"):
            k.write_sysctls(self.host, {IP_FORWARD: "0"})

    def ensure_forwarding(self) -> None:
        """Routed networks need IPv4 forwarding in the host namespace (as
        Docker turns it on); say so when nsnet is the one turning it on."""
        with kernel_errors("enabling IPv4 forwarding"):
            if k.read_sysctl(self.host, IP_FORWARD) != "1":
                k.write_sysctls(self.host, {IP_FORWARD: "1"})
                self.notify("nsnet: enabled IPv4 forwarding in the host namespace "
                            "(net.ipv4.ip_forward=1)")

    def forwarding6_on(self) -> bool:
        """IPv6 forwarding in the host namespace (off, too, where the
        kernel has no IPv6)."""
        try:
            return k.read_sysctl(self.host, k.FORWARDING6) == "1"
        except FileNotFoundError:
            return False

    def restore_forwarding6_off(self) -> None:
        """Rollback of the IPv6 network that turned IPv6 forwarding on."""
        with kernel_errors("restoring net.ipv6.conf.all.forwarding=0"):
            k.write_sysctls(self.host, {k.FORWARDING6: "0"})

    def ensure_forwarding6(self) -> None:
        """IPv6 networks that reach out need IPv6 forwarding in the host
        namespace (the twin of :meth:`ensure_forwarding`)."""
        with kernel_errors("enabling IPv6 forwarding"):
            if not self.forwarding6_on():
                k.write_sysctls(self.host, {k.FORWARDING6: "1"})
                self.notify("nsnet: enabled IPv6 forwarding in the host namespace "
                            "(net.ipv6.conf.all.forwarding=1)")
