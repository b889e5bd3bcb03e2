"""The only layer that talks to the kernel.

Everything here is bound to an explicit namespace handle (:class:`Netns`);
nothing assumes the calling process sits in the "host" namespace.  Netlink
is spoken by a small in-tree codec (see :mod:`nsnet.kernel.netlink` for why
this replaces pyroute2): typed builders return requests that callers batch,
typed readers return dataclasses.

What only some commands use -- conntrack (port removal), ICMP (ping,
check), listening sockets (publishing ports) and tc (network create,
topology links) -- is imported on first use (PEP 562), as the top-level
package does: every nsnet command imports this package, and those four
modules were ~5 ms of each command's start (#15).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from .._lazy import lazy_names
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
    req_bridge_mcast_snooping,
    req_del_addr,
    req_del_group,
    req_del_link,
    req_del_neigh,
    req_del_route,
    req_del_route6,
    req_new_bridge,
    req_new_nsid,
    req_new_veth,
    req_set_link,
)
from .views import InsideReader, Snapshot

# submodule -> the names it gives this package, imported on first use
_LAZY = {
    "conntrack": ("forget_udp",),
    "icmp": ("Echo", "ping", "reachable"),
    "sockets": ("Listener", "busy_ports", "listeners", "socket_owner"),
    "tc": ("NetemSpec", "has_netem", "loopback_guarded", "req_clsact", "req_del_root_qdisc",
           "req_loopback_guard", "req_netem", "req_tbf"),
}
__getattr__ = lazy_names(__name__, _LAZY)


if TYPE_CHECKING:  # for type checkers and readers: the same names, eagerly
    from .conntrack import forget_udp
    from .icmp import Echo, ping, reachable
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
    "InsideReader",
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
    "req_bridge_mcast_snooping",
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
    "req_new_nsid",
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


def snapshot(ns: Netns) -> Snapshot:
    with open_rtnl(ns) as rt:
        return Snapshot(rt.links(), rt.addresses(), rt.routes())


def endpoint_view_at(path: str, ifname: str, version: int = 4) -> Snapshot:
    """:func:`endpoint_view` of the namespace mounted at ``path`` (OSError
    EINVAL if ``path`` is no namespace).  Many in a row: one
    :class:`InsideReader` for all (see :mod:`nsnet.kernel.views`)."""
    with InsideReader() as reader:
        return reader.view(path, ifname, version)


def endpoint_view(ns: Netns, ifname: str, version: int = 4) -> Snapshot:
    """What a reconcile checks of one endpoint inside its namespace, as a
    :class:`Snapshot` holding only that: the link ``ifname`` (one request by
    name), its addresses of the family and the main table's default routes.
    A full snapshot per endpoint (three dumps, every link decoded with all
    its attributes) made ``reconcile --dry-run`` at 5000 endpoints ~7 s,
    mostly attribute parsing."""
    with InsideReader() as reader:
        return reader.view_in(ns.fd, ifname, version)


def snapshot6(ns: Netns) -> Snapshot:
    """As :func:`snapshot`, with IPv6 addresses and routes instead."""
    with open_rtnl(ns) as rt:
        return Snapshot(rt.links(), rt.addresses(socket.AF_INET6), rt.routes(socket.AF_INET6))
