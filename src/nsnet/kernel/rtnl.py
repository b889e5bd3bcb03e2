"""Typed link/address/route operations over :mod:`nsnet.kernel.netlink`.

Builders (``req_*``) return :class:`Request` objects so callers can batch
many of them into one ``sendmsg``; readers return dataclasses.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from . import netlink as nl
from .netlink import Request, attr, attr_str, attr_u32, nested
from .record import Dev, Note, Ns

IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 4, 5
IFLA_BRPORT_STATE, IFLA_BRPORT_MODE = 1, 4  # port STP state; mode = hairpin
IFLA_BR_VLAN_FILTERING = 7
BR_STATE_NAMES = ("disabled", "listening", "learning", "forwarding", "blocking")
RTA_SRC, RTA_IIF, RTA_MARK = 2, 3, 16
AF_BRIDGE, IFLA_AF_SPEC, IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN = 7, 26, 29, 1 << 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFLA_BRIDGE_VLAN_INFO = 2
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 2, 4
RTM_F_LOOKUP_TABLE = 0x1000
_RT_TABLE_LOCAL = 255
RTN_NAMES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast",
             5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw",
             10: "nat", 11: "xresolve"}


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    flags: int
    mtu: int
    master: int
    mac: str
    alias: str
    group: int
    link_netnsid: int | None
    # veth: the peer's ifindex (in the namespace of link_netnsid, if any)
    peer_index: int = 0
    # IFLA_LINKINFO as the kernel sent it: bridge details are decoded from it
    # only when asked (doctor), not for every link of every dump (teardown of
    # 1000 endpoints dumps 1000 bridge ports: decoding each cost ~7%).
    linkinfo: bytes = field(default=b"", repr=False, compare=False)

    @property
    def port_state(self) -> int | None:
        """A bridge port's STP state (3 = forwarding), else None."""
        return _bridge_details(self.linkinfo)[0]

    @property
    def hairpin(self) -> bool:
        """A bridge port's hairpin flag."""
        return _bridge_details(self.linkinfo)[1]

    @property
    def vlan_filtering(self) -> bool:
        """A bridge that filters by VLAN."""
        return _bridge_details(self.linkinfo)[2]

    @property
    def up(self) -> bool:
        return bool(self.flags & nl.IFF_UP)

    @property
    def state(self) -> str:
        if not self.up:
            return "DOWN"
        return "UP" if self.flags & nl.IFF_LOWER_UP else "NO-CARRIER"


@dataclass(frozen=True)
class Address:
    index: int
    address: str
    prefixlen: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or CIDR
    gateway: str | None
    oif: int
    protocol: int
    scope: int
    prefsrc: str | None

    @property
    def is_default(self) -> bool:
        return self.dst == "default"


@dataclass(frozen=True)
class RouteAnswer:
    """The kernel's answer to one route lookup (``ip route get``)."""

    type: str  # "unicast", "local", "unreachable", ...
    oif: int
    gateway: str | None
    prefsrc: str | None
    table: int


@dataclass(frozen=True)
class VethSpec:
    """A veth pair: host end enslaved to ``master`` and the peer created
    directly inside the namespace ``peer_netns_fd`` (no later move)."""

    host_name: str
    peer_name: str
    peer_netns_fd: int
    master: int = 0
    mtu: int = 0
    peer_mac: bytes | None = None
    # IFLA_GROUP of the host end, set in the creating request (the peer has
    # none): a network's ends share one, so they go in one RTM_DELLINK by group
    group: int = 0
    # the host end up in the creating request (``ip link add NAME up ...``): the
    # kernel then sends one link notification for its birth and its going up,
    # where a later "set up" sends one more -- and each notification of a veth
    # end whose peer is in another namespace maps that namespace to its id by
    # a linear walk of the host's ids (peernet2id), O(namespaces there).  The
    # peer is born down, so the host end has no carrier yet: up, it gets no
    # IPv6 address or route before the caller turns IPv6 off on it.
    up: bool = False


def mac_bytes(mac: str) -> bytes:
    return bytes(int(p, 16) for p in mac.split(":"))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return nl.IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def req_new_bridge(name: str, mtu: int = 0, mac: str = "", group: int = 0,
                   up: bool = True) -> Request:
    """A bridge; a fixed MAC keeps the gateway's MAC stable as ports come and go."""
    attrs = [attr_str(nl.IFLA_IFNAME, name),
             nested(nl.IFLA_LINKINFO, attr_str(nl.IFLA_INFO_KIND, "bridge"))]
    if mac:
        attrs.append(attr(nl.IFLA_ADDRESS, mac_bytes(mac)))
    if mtu:
        attrs.append(attr_u32(nl.IFLA_MTU, mtu))
    if group:
        attrs.append(attr_u32(nl.IFLA_GROUP, group))
    flags = nl.IFF_UP if up else 0
    def cmd() -> tuple:
        return ("ip", "link", "add", name, *(["address", mac.lower()] if mac else []),
                *(["mtu", mtu] if mtu else []), *(["group", group] if group else []),
                *(["up"] if up else []), "type", "bridge")
    return Request(nl.RTM_NEWLINK, nl.NLM_F_CREATE | nl.NLM_F_EXCL,
                   _ifinfo(0, flags, nl.IFF_UP) + b"".join(attrs), f"create bridge {name}", cmd)


def req_new_veth(spec: VethSpec) -> Request:
    peer = [attr_str(nl.IFLA_IFNAME, spec.peer_name),
            attr_u32(nl.IFLA_NET_NS_FD, spec.peer_netns_fd)]
    if spec.mtu:
        peer.append(attr_u32(nl.IFLA_MTU, spec.mtu))
    if spec.peer_mac:
        peer.append(attr(nl.IFLA_ADDRESS, spec.peer_mac))
    host = [attr_str(nl.IFLA_IFNAME, spec.host_name)]
    if spec.master:
        host.append(attr_u32(nl.IFLA_MASTER, spec.master))
    if spec.mtu:
        host.append(attr_u32(nl.IFLA_MTU, spec.mtu))
    if spec.group:
        host.append(attr_u32(nl.IFLA_GROUP, spec.group))
    info = nested(nl.IFLA_LINKINFO, attr_str(nl.IFLA_INFO_KIND, "veth"),
                  nested(nl.IFLA_INFO_DATA,
                         attr(nl.VETH_INFO_PEER, _ifinfo() + b"".join(peer))))
    def cmd() -> tuple:
        return ("ip", "link", "add", spec.host_name,
                *(["master", Dev(spec.master)] if spec.master else []),
                *(["mtu", spec.mtu] if spec.mtu else []),
                *(["group", spec.group] if spec.group else []),
                *(["up"] if spec.up else []),
                "type", "veth", "peer", "name", spec.peer_name, "netns", Ns(spec.peer_netns_fd),
                *(["mtu", spec.mtu] if spec.mtu else []),
                *(["address", spec.peer_mac.hex(":")] if spec.peer_mac else []))
    flags = nl.IFF_UP if spec.up else 0
    return Request(nl.RTM_NEWLINK, nl.NLM_F_CREATE | nl.NLM_F_EXCL,
                   _ifinfo(0, flags, flags) + b"".join(host) + info,
                   f"create veth {spec.host_name} <-> {spec.peer_name}", cmd)


RTM_NEWNSID, NETNSA_NSID, NETNSA_FD = 88, 1, 3


def req_new_nsid(netns_fd: int, nsid: int) -> Request:
    """``ip netns set NAME NSID``: the id by which this namespace knows the
    namespace ``netns_fd`` (for a veth whose peer is there, IFLA_LINK_NETNSID).

    Why choose it: the kernel maps a peer namespace to its id by walking the
    ids in ascending order until it finds it (peernet2id, on every link
    notification of such a veth end: ~5 per endpoint at connect), and numbers
    new namespaces upward from 0 -- so each new endpoint's walk passes every
    namespace connected before it.  Ids handed out downward (the newest
    lowest) make the newest first: a connect's link notifications no longer
    cost more with the namespaces already there (walks for the oldest grow
    instead).  Numbering itself still walks every id once, to refuse a
    namespace already numbered, as the kernel's own first numbering does."""
    body = struct.pack("=B3x", socket.AF_UNSPEC) + attr_u32(NETNSA_FD, netns_fd) \
        + attr(NETNSA_NSID, struct.pack("=i", nsid))
    return Request(RTM_NEWNSID, 0, body, f"set the id of a namespace to {nsid}",
                   lambda: ("ip", "netns", "set", Ns(netns_fd), nsid,
                            Note("best effort: a namespace numbered already keeps its id "
                                 "(File exists), and the connect goes on")))


def req_set_link(name: str = "", index: int = 0, up: bool | None = None,
                 alias: str | None = None, group: int | None = None,
                 hairpin: bool | None = None) -> Request:
    """Change a link found by index, or by name when index is 0; ``hairpin``
    sets the bridge-port mode of an enslaved link (``ip link set X type
    bridge_slave hairpin on``), which, unlike AF_BRIDGE setlink, works by name."""
    flags = nl.IFF_UP if up else 0
    change = nl.IFF_UP if up is not None else 0
    attrs = [attr_str(nl.IFLA_IFNAME, name)] if name and not index else []
    if alias is not None:
        attrs.append(attr_str(nl.IFLA_IFALIAS, alias))
    if group is not None:
        attrs.append(attr_u32(nl.IFLA_GROUP, group))
    if hairpin is not None:
        mode = attr(IFLA_BRPORT_MODE, struct.pack("=B", int(hairpin)))
        attrs.append(nested(nl.IFLA_LINKINFO, attr_str(IFLA_INFO_SLAVE_KIND, "bridge"),
                            nested(IFLA_INFO_SLAVE_DATA, mode)))
    def cmd() -> tuple:
        words: list = ["ip", "link", "set", "dev", name if name and not index else Dev(index)]
        if up is not None:
            words.append("up" if up else "down")
        if alias is not None:
            words += ["alias", alias]
        if group is not None:
            words += ["group", group]
        if hairpin is not None:
            words += ["type", "bridge_slave", "hairpin", "on" if hairpin else "off"]
        return tuple(words)
    return Request(nl.RTM_NEWLINK, 0, _ifinfo(index, flags, change) + b"".join(attrs),
                   f"set link {name or index}", cmd)


IFLA_BR_MCAST_SNOOPING = 23


def req_bridge_mcast_snooping(index: int, on: bool) -> Request:
    """``ip link set dev INDEX type bridge mcast_snooping 0|1``.  Off before
    a bridge's ports are deleted: each port leaving re-runs the port state
    selection over every remaining port, which (snooping on) restarts each
    one's multicast query timers -- O(ports^2) timer work, ~0.15 s of the
    kernel's ~1 s deletion of 1000 ports."""
    data = attr(IFLA_BR_MCAST_SNOOPING, struct.pack("=B", int(on)))
    body = _ifinfo(index) + nested(nl.IFLA_LINKINFO, attr_str(nl.IFLA_INFO_KIND, "bridge"),
                                   nested(nl.IFLA_INFO_DATA, data))
    return Request(nl.RTM_NEWLINK, 0, body, f"set multicast snooping of bridge {index}",
                   lambda: ("ip", "link", "set", "dev", Dev(index), "type", "bridge",
                            "mcast_snooping", int(on)))


def req_del_link(index: int = 0, name: str = "") -> Request:
    attrs = attr_str(nl.IFLA_IFNAME, name) if name and not index else b""
    return Request(nl.RTM_DELLINK, 0, _ifinfo(index) + attrs, f"delete link {name or index}",
                   lambda: ("ip", "link", "del", "dev",
                            name if name and not index else Dev(index)))


def req_del_group(group: int) -> Request:
    """Delete every link of a group in one request: one RCU wait for all."""
    return Request(nl.RTM_DELLINK, 0, _ifinfo() + attr_u32(nl.IFLA_GROUP, group),
                   f"delete link group {group}",
                   lambda: ("ip", "link", "del", "group", group,
                            Note("one request for every link of the group: the kernel waits "
                                 "for one RCU grace period, not one per link")))


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


IFA_F_NODAD = 0x02


def req_add_addr(index: int, cidr: str, nodad: bool = False) -> Request:
    """``ip addr add CIDR dev INDEX [nodad]``.  ``nodad`` (IPv6): the address
    is usable at once instead of after duplicate address detection (~1-2 s
    of a tentative address that cannot be a source, plus a neighbour
    solicitation per address on the bridge); nsnet's IPAM already
    guarantees the address is unique on its network."""
    iface = ipaddress.ip_interface(cidr)
    packed = iface.ip.packed
    flags = IFA_F_NODAD if nodad else 0
    body = nl.IFADDR.pack(_family(iface.ip), iface.network.prefixlen, flags,
                          nl.RT_SCOPE_UNIVERSE, index)
    body += attr(nl.IFA_LOCAL, packed) + attr(nl.IFA_ADDRESS, packed)
    return Request(nl.RTM_NEWADDR, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body,
                   f"add address {cidr}",
                   lambda: ("ip", "addr", "add", str(iface), "dev", Dev(index),
                            *(["nodad"] if nodad else [])))


def req_del_addr(index: int, cidr: str) -> Request:
    """``ip addr del CIDR dev INDEX``, as ip sends it: IFA_LOCAL and
    IFA_ADDRESS both, so the kernel also matches the prefix length (with
    IFA_LOCAL alone it deletes the first address of that IP whatever its
    prefix: 10.1.0.2/16 for a ``del 10.1.0.2/24``)."""
    iface = ipaddress.ip_interface(cidr)
    body = nl.IFADDR.pack(_family(iface.ip), iface.network.prefixlen, 0, 0, index)
    body += attr(nl.IFA_LOCAL, iface.ip.packed) + attr(nl.IFA_ADDRESS, iface.ip.packed)
    return Request(nl.RTM_DELADDR, 0, body, f"remove address {cidr}",
                   lambda: ("ip", "addr", "del", str(iface), "dev", Dev(index)))


def req_add_route(dst: str, gateway: str | None = None, oif: int = 0) -> Request:
    """A static route in the main table; ``dst`` may be "default"."""
    net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst)
    scope = nl.RT_SCOPE_UNIVERSE if gateway else nl.RT_SCOPE_LINK
    body = nl.RTMSG.pack(_family(net.network_address), net.prefixlen, 0, 0, nl.RT_TABLE_MAIN,
                         nl.RTPROT_BOOT, scope, nl.RTN_UNICAST, 0)
    if net.prefixlen:
        body += attr(nl.RTA_DST, net.network_address.packed)
    if gateway:
        body += attr(nl.RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    if oif:
        body += attr_u32(nl.RTA_OIF, oif)
    def cmd() -> tuple:
        return ("ip", "route", "add", "default" if dst == "default" else str(net),
                *(["via", gateway] if gateway else []), *(["dev", Dev(oif)] if oif else []),
                "proto", "boot", *([] if gateway else ["scope", "link"]))
    return Request(nl.RTM_NEWROUTE, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body, f"add route {dst}",
                   cmd)


def req_del_route(dst: str) -> Request:
    """Remove a main-table route to ``dst`` ("default" allowed)."""
    net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst)
    body = nl.RTMSG.pack(_family(net.network_address), net.prefixlen, 0, 0, nl.RT_TABLE_MAIN,
                         0, 0, 0, 0)
    if net.prefixlen:
        body += attr(nl.RTA_DST, net.network_address.packed)
    return Request(nl.RTM_DELROUTE, 0, body, f"remove route {dst}",
                   lambda: ("ip", "route", "del", "default" if dst == "default" else str(net)))


def _dst6(dst: str) -> ipaddress.IPv6Network:
    net = ipaddress.ip_network("::/0" if dst == "default" else dst)
    if net.version != 6:
        raise ValueError(f"{dst} is not an IPv6 destination")
    return net  # type: ignore[return-value]


def req_add_route6(dst: str, gateway: str | None = None, oif: int = 0) -> Request:
    """An IPv6 route in the main table, as ``ip -6 route add DST [via GW]
    [dev OIF]`` sends it (byte for byte: RTA_DST even for the default route,
    scope universe whatever the next hop -- IPv6 routes have no scope)."""
    net = _dst6(dst)
    body = nl.RTMSG.pack(socket.AF_INET6, net.prefixlen, 0, 0, nl.RT_TABLE_MAIN,
                         nl.RTPROT_BOOT, nl.RT_SCOPE_UNIVERSE, nl.RTN_UNICAST, 0)
    body += attr(nl.RTA_DST, net.network_address.packed)
    if gateway:
        gw = ipaddress.ip_address(gateway)
        if gw.version != 6:
            raise ValueError(f"gateway {gateway} of an IPv6 route is not an IPv6 address")
        body += attr(nl.RTA_GATEWAY, gw.packed)
    if oif:
        body += attr_u32(nl.RTA_OIF, oif)
    return Request(nl.RTM_NEWROUTE, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body,
                   f"add route {dst} (IPv6)",
                   lambda: ("ip", "-6", "route", "add", "default" if dst == "default" else str(net),
                            *(["via", gateway] if gateway else []),
                            *(["dev", Dev(oif)] if oif else []), "proto", "boot"))


def req_del_route6(dst: str) -> Request:
    """Remove a main-table IPv6 route to ``dst`` ("default" allowed)."""
    net = _dst6(dst)
    body = nl.RTMSG.pack(socket.AF_INET6, net.prefixlen, 0, 0, nl.RT_TABLE_MAIN, 0, 0, 0, 0)
    body += attr(nl.RTA_DST, net.network_address.packed)
    return Request(nl.RTM_DELROUTE, 0, body, f"remove route {dst} (IPv6)",
                   lambda: ("ip", "-6", "route", "del",
                            "default" if dst == "default" else str(net)))


def req_del_neigh(index: int, ip: str) -> Request:
    """Forget a neighbour (ARP) entry."""
    addr = ipaddress.ip_address(ip)
    body = nl.NDMSG.pack(_family(addr), index, 0, 0, 0) + attr(nl.NDA_DST, addr.packed)
    return Request(nl.RTM_DELNEIGH, 0, body, f"delete neighbour {ip}",
                   lambda: ("ip", "neigh", "del", str(addr), "dev", Dev(index)))


def req_dump_addresses(family: int, index: int = 0) -> Request:
    """``ip -4|-6 addr show dev INDEX``'s dump request: with strict checking
    on the socket (NETLINK_GET_STRICT_CHK) the kernel sends that link's
    addresses only; without it, every address of the family."""
    return Request(nl.RTM_GETADDR, nl.NLM_F_DUMP, nl.IFADDR.pack(family, 0, 0, 0, index),
                   f"addresses of {index or 'every link'}",
                   lambda: ("ip", _version_flag(family), "addr", "show",
                            *(["dev", Dev(index)] if index else [])))


def req_dump_routes(family: int, table: int = nl.RT_TABLE_MAIN) -> Request:
    """``ip -4|-6 route show table main``'s dump request: with strict
    checking the kernel sends that table's routes only; without it, every
    table's (the header's table byte then tells them apart)."""
    body = nl.RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0) + attr_u32(nl.RTA_TABLE, table)
    return Request(nl.RTM_GETROUTE, nl.NLM_F_DUMP, body, f"routes of table {table}",
                   lambda: ("ip", _version_flag(family), "route", "show", "table",
                            "main" if table == nl.RT_TABLE_MAIN else table))


def _version_flag(family: int) -> str:
    return "-6" if family == socket.AF_INET6 else "-4"


def _decode_link(body: bytes) -> Link:
    _fam, _type, index, flags, _change = nl.IFINFO.unpack_from(body)
    a = nl.parse_attrs(body, nl.IFINFO.size)
    linkinfo = a.get(nl.IFLA_LINKINFO, b"")
    kind = nl.cstr(nl.parse_attrs(linkinfo).get(nl.IFLA_INFO_KIND, b"")) if linkinfo else ""
    netnsid = a.get(nl.IFLA_LINK_NETNSID)
    return Link(
        index=index,
        name=nl.cstr(a.get(nl.IFLA_IFNAME, b"")),
        kind=kind,
        flags=flags,
        mtu=nl.u32(a[nl.IFLA_MTU]) if nl.IFLA_MTU in a else 0,
        master=nl.u32(a[nl.IFLA_MASTER]) if nl.IFLA_MASTER in a else 0,
        mac=a.get(nl.IFLA_ADDRESS, b"").hex(":"),
        alias=nl.cstr(a.get(nl.IFLA_IFALIAS, b"")),
        group=nl.u32(a[nl.IFLA_GROUP]) if nl.IFLA_GROUP in a else 0,
        link_netnsid=struct.unpack("=i", netnsid)[0] if netnsid else None,
        peer_index=nl.u32(a[nl.IFLA_LINK]) if nl.IFLA_LINK in a else 0,
        linkinfo=linkinfo,
    )


def _bridge_details(linkinfo: bytes) -> tuple[int | None, bool, bool]:
    """A bridge port's STP state and hairpin flag, a bridge's VLAN filtering,
    from IFLA_LINKINFO's slave data / bridge data."""
    if not linkinfo:
        return None, False, False
    info = nl.parse_attrs(linkinfo)
    state, hairpin, filtering = None, False, False
    if nl.cstr(info.get(IFLA_INFO_SLAVE_KIND, b"")) == "bridge":
        port = nl.parse_attrs(info.get(IFLA_INFO_SLAVE_DATA, b""))
        if IFLA_BRPORT_STATE in port:
            state = port[IFLA_BRPORT_STATE][0]
        hairpin = bool(port.get(IFLA_BRPORT_MODE, b"\0")[0])
    if nl.cstr(info.get(nl.IFLA_INFO_KIND, b"")) == "bridge":
        data = nl.parse_attrs(info.get(nl.IFLA_INFO_DATA, b""))
        filtering = bool(data.get(IFLA_BR_VLAN_FILTERING, b"\0")[0])
    return state, hairpin, filtering


def _ip(raw: bytes) -> str:
    # IPv4 by the C formatter (the same dotted quad, ~10x faster: a reconcile
    # decodes two per endpoint); IPv6 by ipaddress, whose text the state's
    # addresses were written in (inet_ntop writes some, e.g. mapped, otherwise)
    return socket.inet_ntoa(raw) if len(raw) == 4 else str(ipaddress.ip_address(raw))


def _decode_addr(body: bytes) -> Address:
    _fam, prefixlen, _flags, _scope, index = nl.IFADDR.unpack_from(body)
    a = nl.parse_attrs(body, nl.IFADDR.size)
    raw = a.get(nl.IFA_LOCAL) or a.get(nl.IFA_ADDRESS, b"")
    return Address(index, _ip(raw), prefixlen)


def _decode_route(body: bytes) -> tuple[int, Route]:
    _fam, dst_len, _s, _t, table, proto, scope, _type, _f = nl.RTMSG.unpack_from(body)
    a = nl.parse_attrs(body, nl.RTMSG.size)
    if nl.RTA_TABLE in a:
        table = nl.u32(a[nl.RTA_TABLE])
    dst = f"{_ip(a[nl.RTA_DST])}/{dst_len}" if nl.RTA_DST in a else "default"
    if dst_len == 0:
        dst = "default"
    return table, Route(
        dst=dst,
        gateway=_ip(a[nl.RTA_GATEWAY]) if nl.RTA_GATEWAY in a else None,
        oif=nl.u32(a[nl.RTA_OIF]) if nl.RTA_OIF in a else 0,
        protocol=proto,
        scope=scope,
        prefsrc=_ip(a[nl.RTA_PREFSRC]) if nl.RTA_PREFSRC in a else None,
    )


class Rtnl(nl.Netlink):
    """Netlink socket with typed readers; bound to the namespace it was opened in."""

    def links(self) -> list[Link]:
        # without the statistics nothing here reads (a fifth of each message):
        # the host's dump at 5000 endpoints is ~10% cheaper
        body = _ifinfo() + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [_decode_link(r.body) for r in self.dump(nl.RTM_GETLINK, body)
                if r.msg_type == nl.RTM_NEWLINK]

    def addresses(self, family: int = socket.AF_INET) -> list[Address]:
        body = nl.IFADDR.pack(family, 0, 0, 0, 0)
        return [_decode_addr(r.body) for r in self.dump(nl.RTM_GETADDR, body)
                if r.msg_type == nl.RTM_NEWADDR]

    def static_neighbours(self, index: int) -> set[str]:
        """Addresses of ``index``'s neighbour entries that someone set by hand
        (PERMANENT or NOARP): never nsnet's to forget."""
        out = set()
        for r in self.dump(nl.RTM_GETNEIGH, nl.NDMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            if r.msg_type != nl.RTM_NEWNEIGH:
                continue
            _fam, ifindex, state, _flags, _type = nl.NDMSG.unpack_from(r.body)
            dst = nl.parse_attrs(r.body, nl.NDMSG.size).get(nl.NDA_DST)
            if ifindex == index and dst and state & (nl.NUD_PERMANENT | nl.NUD_NOARP):
                out.add(str(ipaddress.ip_address(dst)))
        return out

    def routes(self, family: int = socket.AF_INET) -> list[Route]:
        body = nl.RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        # the local table's routes (most of a small namespace's) are skipped
        # undecoded: its id fits the header byte, which then says 255
        decoded = (_decode_route(r.body) for r in self.dump(nl.RTM_GETROUTE, body)
                   if r.msg_type == nl.RTM_NEWROUTE and r.body[4] != _RT_TABLE_LOCAL)
        return [route for table, route in decoded if table == nl.RT_TABLE_MAIN]

    def route_get(self, dst: str, src: str | None = None, iif: int = 0, oif: int = 0,
                  mark: int = 0) -> RouteAnswer:
        """The kernel's own route lookup, as ``ip route get DST [from SRC]
        [iif DEV] [oif DEV] [mark N]``: with ``iif`` it is the input path
        (forwarding, rp_filter: EXDEV) a packet arriving there would take.
        Raises NetlinkError (ENETUNREACH, EHOSTUNREACH, EXDEV, ...)."""
        ip = ipaddress.ip_address(dst)
        body = nl.RTMSG.pack(_family(ip), ip.max_prefixlen, 32 if src else 0, 0, 0, 0, 0, 0,
                             RTM_F_LOOKUP_TABLE)
        body += attr(nl.RTA_DST, ip.packed)
        if src:
            body += attr(RTA_SRC, ipaddress.ip_address(src).packed)
        if iif:
            body += attr_u32(RTA_IIF, iif)
        if oif:
            body += attr_u32(nl.RTA_OIF, oif)
        if mark:
            body += attr_u32(RTA_MARK, mark)
        reply = self.get(nl.RTM_GETROUTE, body, f"route to {dst}").body
        table, route = _decode_route(reply)
        rtype = nl.RTMSG.unpack_from(reply)[7]
        return RouteAnswer(RTN_NAMES.get(rtype, str(rtype)), route.oif, route.gateway,
                           route.prefsrc, table)

    def bridge_vlans(self) -> dict[int, list[tuple[int, int]]]:
        """VLANs of every bridge port (``bridge vlan show``): ifindex ->
        [(vid, flags)], flags BRIDGE_VLAN_INFO_PVID (2) | _UNTAGGED (4)."""
        body = nl.IFINFO.pack(AF_BRIDGE, 0, 0, 0, 0) + attr_u32(IFLA_EXT_MASK,
                                                                RTEXT_FILTER_BRVLAN)
        out: dict[int, list[tuple[int, int]]] = {}
        for reply in self.dump(nl.RTM_GETLINK, body):
            if reply.msg_type != nl.RTM_NEWLINK:
                continue
            index = nl.IFINFO.unpack_from(reply.body)[2]
            spec = nl.parse_attrs(reply.body, nl.IFINFO.size).get(IFLA_AF_SPEC, b"")
            offset, vlans = 0, []
            while offset + 4 <= len(spec):  # repeated attributes: parse_attrs keeps one
                length, kind = struct.unpack_from("=HH", spec, offset)
                if length < 4:
                    break
                if kind & nl.NLA_TYPE_MASK == IFLA_BRIDGE_VLAN_INFO and length >= 8:
                    flags, vid = struct.unpack_from("=HH", spec, offset + 4)
                    vlans.append((vid, flags))
                offset += (length + 3) & ~3
            out[index] = vlans
        return out

    def link(self, name: str) -> Link:
        """One link by name (ENODEV if absent)."""
        body = _ifinfo() + attr_str(nl.IFLA_IFNAME, name)
        return _decode_link(self.get(nl.RTM_GETLINK, body, f"link {name}").body)

    def link_by_name(self) -> dict[str, Link]:
        """Every link (a full dump: O(links in the namespace))."""
        return {link.name: link for link in self.links()}

    def find_link(self, name: str = "", index: int = 0) -> Link | None:
        """One link by name or index, None if absent: one request, whatever
        else the namespace holds (never a dump)."""
        return self.links_named([name]).get(name) if name else self._find_index(index)

    def _find_index(self, index: int) -> Link | None:
        reply = self.get_many(nl.RTM_GETLINK, [_ifinfo(index)])[0]
        return _decode_link(reply.body) if isinstance(reply, nl.Reply) else None

    def links_named(self, names: list[str]) -> dict[str, Link]:
        """The links of these names that exist (name -> Link), looked up by
        name in one pipelined batch of requests: O(len(names)), not a dump
        of every link in the namespace."""
        names = list(dict.fromkeys(names))
        replies = self.get_many(nl.RTM_GETLINK, [_ifinfo() + attr_str(nl.IFLA_IFNAME, n)
                                                 for n in names])
        out = {}
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, nl.Reply):
                out[name] = _decode_link(reply.body)
            elif reply not in (errno.ENODEV, errno.ENOENT):
                raise nl.NetlinkError(reply, f"link {name}")
        return out
