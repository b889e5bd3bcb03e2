"""The only layer that talks to the kernel.

Everything here is bound to an explicit namespace handle (:class:`Netns`);
nothing assumes the calling process sits in the "host" namespace.  Netlink
is spoken by a small in-tree codec (see :mod:`nsnet.kernel.netlink` for why
this replaces pyroute2): typed builders return requests that callers batch,
typed readers return dataclasses.
"""

from __future__ import annotations

import os
import socket

from .conntrack import forget_udp
from .icmp import Echo, ping, reachable
from .ipv6 import (
    FORWARDING6,
    ipv6_gateway_sysctls,
    ipv6_interface_sysctls,
    ipv6_off_sysctls,
    ipv6_quiet_default_sysctls,
)
from .netlink import BatchResult, NetlinkError, Request
from .netns import (
    Netns,
    create_netns,
    current_netns,
    die_with_parent,
    ensure_netns_dir,
    entered,
    exec_in_netns,
    is_netns_mount,
    list_netns,
    mount_bind,
    open_netns,
    read_sysctl_here,
    remove_netns,
    write_sysctls_here,
)
from .rtnl import (
    Address,
    Link,
    Route,
    Rtnl,
    VethSpec,
    mac_bytes,
    req_add_addr,
    req_add_route,
    req_add_route6,
    req_del_addr,
    req_del_group,
    req_del_link,
    req_del_neigh,
    req_del_route,
    req_del_route6,
    req_new_bridge,
    req_new_veth,
    req_set_link,
)
from .sockets import Listener, busy_ports, listeners, socket_owner
from .tc import (
    NetemSpec,
    has_netem,
    loopback_guarded,
    req_clsact,
    req_del_root_qdisc,
    req_loopback_guard,
    req_netem,
    req_tbf,
)

# address families, for the engine's per-family dumps (it imports no socket)
INET, INET6 = socket.AF_INET, socket.AF_INET6

__all__ = [
    "FORWARDING6",
    "INET",
    "INET6",
    "Address",
    "BatchResult",
    "Echo",
    "Link",
    "Listener",
    "NetemSpec",
    "NetlinkError",
    "Netns",
    "Request",
    "Route",
    "Rtnl",
    "Snapshot",
    "VethSpec",
    "busy_ports",
    "create_netns",
    "current_netns",
    "die_with_parent",
    "endpoint_view",
    "endpoint_view_at",
    "ensure_netns_dir",
    "entered",
    "exec_in_netns",
    "forget_udp",
    "has_netem",
    "ipv6_gateway_sysctls",
    "ipv6_interface_sysctls",
    "ipv6_off_sysctls",
    "ipv6_quiet_default_sysctls",
    "is_netns_mount",
    "list_netns",
    "listeners",
    "loopback_guarded",
    "mac_bytes",
    "mount_bind",
    "open_netns",
    "open_rtnl",
    "ping",
    "reachable",
    "read_sysctl",
    "read_sysctl_here",
    "remove_netns",
    "req_add_addr",
    "req_add_route",
    "req_add_route6",
    "req_clsact",
    "req_del_addr",
    "req_del_group",
    "req_del_link",
    "req_del_neigh",
    "req_del_root_qdisc",
    "req_del_route",
    "req_del_route6",
    "req_loopback_guard",
    "req_netem",
    "req_new_bridge",
    "req_new_veth",
    "req_set_link",
    "req_tbf",
    "snapshot",
    "snapshot6",
    "socket_owner",
    "write_sysctls",
]


def open_rtnl(ns: Netns) -> Rtnl:
    """A netlink socket living in ``ns`` (opened there, usable from here)."""
    with entered(ns.fd):
        return Rtnl()


def write_sysctls(ns: Netns, values: dict[str, str]) -> None:
    """Write sysctls (keys as paths under /proc/sys, e.g.
    ``net/ipv6/conf/eth0/disable_ipv6`` -- interface names may hold dots)
    as seen from inside ``ns``; one setns covers any number of keys."""
    with entered(ns.fd):
        write_sysctls_here(values)


def read_sysctl(ns: Netns, key: str) -> str:
    with entered(ns.fd):
        return read_sysctl_here(key)


class Snapshot:
    """Links, IPv4 addresses and main-table IPv4 routes of one namespace."""

    def __init__(self, links: list[Link], addresses: list[Address], routes: list[Route]):
        self.links = links
        self.addresses = addresses
        self.routes = routes

    def link(self, name: str) -> Link | None:
        return next((lk for lk in self.links if lk.name == name), None)

    def name_of(self, index: int) -> str:
        return next((lk.name for lk in self.links if lk.index == index), f"if{index}")

    def addresses_of(self, name: str) -> list[Address]:
        link = self.link(name)
        return [a for a in self.addresses if link and a.index == link.index]


def snapshot(ns: Netns) -> Snapshot:
    with open_rtnl(ns) as rt:
        return Snapshot(rt.links(), rt.addresses(), rt.routes())


def endpoint_view_at(path: str, ifname: str, version: int = 4) -> Snapshot:
    """:func:`endpoint_view` of the namespace mounted at ``path``, without
    :func:`open_netns`'s checks (entering it is the check: OSError EINVAL
    if ``path`` is no namespace; O_NONBLOCK: a FIFO put there cannot hang
    it) -- a reconcile does this 5000 times."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with entered(fd):
            rt = Rtnl()
    finally:
        os.close(fd)
    with rt:
        return _view(rt, ifname, version)


def endpoint_view(ns: Netns, ifname: str, version: int = 4) -> Snapshot:
    """What a reconcile checks of one endpoint inside its namespace, as a
    :class:`Snapshot` holding only that: the link ``ifname`` (one request by
    name), its IPv4 addresses and the main table's default routes, the rest
    of each dump skipped undecoded.  A full snapshot per endpoint (three
    dumps, every link decoded with all its attributes) made ``reconcile
    --dry-run`` at 5000 endpoints ~7 s, mostly attribute parsing."""
    with open_rtnl(ns) as rt:
        return _view(rt, ifname, version)


def _view(rt: Rtnl, ifname: str, version: int) -> Snapshot:
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    found, addresses = rt.link_and_addresses(ifname, family)  # one round trip
    if found is None:
        return Snapshot([], [], [])
    index, flags = found  # the link's other fields are not read: left empty
    link = Link(index, ifname, "", flags, 0, 0, "", "", 0, None)
    return Snapshot([link], addresses, rt.default_routes(family))


def snapshot6(ns: Netns) -> Snapshot:
    """As :func:`snapshot`, with IPv6 addresses and routes instead."""
    with open_rtnl(ns) as rt:
        return Snapshot(rt.links(), rt.addresses(socket.AF_INET6), rt.routes(socket.AF_INET6))
