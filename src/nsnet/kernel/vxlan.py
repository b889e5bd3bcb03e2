"""VXLAN data plane requests: the device, static FDB entries, neighbours.

An overlay network is, on every host, a VXLAN device (one VNI) enslaved to
a local bridge.  The device is made with learning off and ARP proxy on
(``ip link add ... type vxlan ... nolearning proxy``), as Docker's overlay
driver does: nothing is learnt from, or flooded onto, the underlay.  Each
remote endpoint gets

* a static FDB entry on the VXLAN device (``bridge fdb append MAC dev VX
  dst VTEP self permanent``): frames to MAC are encapsulated to VTEP only;
* a permanent neighbour entry on the VXLAN device (``ip neigh replace IP
  lladdr MAC dev VX nud permanent``), one per address family the endpoint
  has: with ``proxy`` the device answers an endpoint's ARP request, and
  its IPv6 neighbour solicitation (the kernel's ``neigh_reduce``), from
  this table itself, so neither leaves the host.

No all-zero-MAC (BUM) FDB entry is made: with every remote endpoint known
from the registry there is no unknown unicast to flood, and without that
entry the device drops broadcasts instead of head-end replicating them to
every VTEP.  (Add one only for a workload that needs real broadcast.)

The overlay MTU is the underlay's minus 50: VXLAN over IPv4 adds an outer
Ethernet (14), IPv4 (20), UDP (8) and VXLAN (8) header.

Every builder is checked byte for byte against the request iproute2 sends
for the same command (tests/unit/test_vxlan_requests.py, captured with
strace): attributes are emitted in iproute2's order for that reason only.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from . import netlink as nl
from .netlink import Request, attr, attr_str, attr_u32
from .record import Dev
from .rtnl import AF_BRIDGE, mac_bytes

VXLAN_PORT = 4789  # IANA; Linux's own default (8472) predates it
VXLAN_OVERHEAD_V4 = 50
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LINK = 1, 4, 3
IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 7, 11, 15
NDA_LLADDR = 2
NTF_SELF = 0x02
NLM_F_APPEND = 0x800
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1


@dataclass(frozen=True)
class VxlanSpec:
    """One VXLAN device: ``vni`` (24 bits), the local VTEP address and the
    underlay device index it sends through, ``mtu`` (0: the kernel's)."""

    name: str
    vni: int
    local: str
    underlay_index: int
    mtu: int = 0
    port: int = VXLAN_PORT
    master: int = 0  # enslave to this bridge at creation (ip link add ... master BR)

    def __post_init__(self) -> None:
        if not VNI_MIN <= self.vni <= VNI_MAX:
            raise ValueError(f"VNI {self.vni} out of range {VNI_MIN}-{VNI_MAX}")


def overlay_mtu(underlay_mtu: int) -> int:
    """The largest inner MTU an IPv4 underlay of ``underlay_mtu`` carries."""
    return underlay_mtu - VXLAN_OVERHEAD_V4


def req_new_vxlan(spec: VxlanSpec) -> Request:
    """``ip link add NAME [mtu M] [master BR] type vxlan id VNI local IP dev
    UNDERLAY dstport PORT nolearning proxy`` (created down: set it up once its
    FDB is programmed)."""
    local = ipaddress.IPv4Address(spec.local)
    data = b"".join([
        attr_u32(IFLA_VXLAN_LINK, spec.underlay_index),
        attr(IFLA_VXLAN_PROXY, b"\x01"),
        attr_u32(IFLA_VXLAN_ID, spec.vni),
        attr(IFLA_VXLAN_LOCAL, local.packed),
        attr(IFLA_VXLAN_LEARNING, b"\x00"),
        attr(IFLA_VXLAN_PORT, struct.pack("!H", spec.port)),
    ])
    attrs = [attr_u32(nl.IFLA_MTU, spec.mtu)] if spec.mtu else []
    if spec.master:
        attrs.append(attr_u32(nl.IFLA_MASTER, spec.master))
    attrs += [attr_str(nl.IFLA_IFNAME, spec.name), _linkinfo_vxlan(data)]
    body = nl.IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(attrs)
    return Request(nl.RTM_NEWLINK, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body,
                   f"create vxlan {spec.name} (VNI {spec.vni})",
                   lambda: ("ip", "link", "add", spec.name,
                            *(["mtu", spec.mtu] if spec.mtu else []),
                            *(["master", Dev(spec.master)] if spec.master else []),
                            "type", "vxlan", "id", spec.vni, "local", str(local),
                            "dev", Dev(spec.underlay_index), "dstport", spec.port,
                            "nolearning", "proxy"))


def _linkinfo_vxlan(data: bytes) -> bytes:
    # as iproute2 sends it: no NLA_F_NESTED, the kind without its NUL
    return attr(nl.IFLA_LINKINFO, attr(nl.IFLA_INFO_KIND, b"vxlan")
                + attr(nl.IFLA_INFO_DATA, data))


def _fdb_body(index: int, mac: str, vtep: str) -> bytes:
    head = nl.NDMSG.pack(AF_BRIDGE, index, nl.NUD_PERMANENT | nl.NUD_NOARP, NTF_SELF, 0)
    return (head + attr(NDA_LLADDR, mac_bytes(mac))
            + attr(nl.NDA_DST, ipaddress.IPv4Address(vtep).packed))


def req_fdb_append(index: int, mac: str, vtep: str) -> Request:
    """``bridge fdb append MAC dev VX dst VTEP self permanent``: frames to
    MAC leave the VXLAN device ``index`` encapsulated to ``vtep``."""
    return Request(nl.RTM_NEWNEIGH, nl.NLM_F_CREATE | NLM_F_APPEND,
                   _fdb_body(index, mac, vtep), f"add fdb {mac} -> {vtep}",
                   lambda: ("bridge", "fdb", "append", mac, "dev", Dev(index), "dst", vtep,
                            "self", "permanent"))


def req_fdb_del(index: int, mac: str, vtep: str) -> Request:
    """``bridge fdb del MAC dev VX dst VTEP self``."""
    return Request(nl.RTM_DELNEIGH, 0, _fdb_body(index, mac, vtep),
                   f"delete fdb {mac} -> {vtep}",
                   lambda: ("bridge", "fdb", "del", mac, "dev", Dev(index), "dst", vtep, "self"))


def req_neigh_replace(index: int, ip: str, mac: str) -> Request:
    """``ip neigh replace IP lladdr MAC dev VX nud permanent``."""
    addr = ipaddress.ip_address(ip)
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    body = (nl.NDMSG.pack(family, index, nl.NUD_PERMANENT, 0, 0)
            + attr(nl.NDA_DST, addr.packed) + attr(NDA_LLADDR, mac_bytes(mac)))
    return Request(nl.RTM_NEWNEIGH, nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body,
                   f"set neighbour {ip} -> {mac}",
                   lambda: ("ip", "neigh", "replace", str(addr), "lladdr", mac, "dev", Dev(index),
                            "nud", "permanent"))


def req_neigh_del(index: int, ip: str) -> Request:
    """``ip neigh del IP dev VX`` (iproute2 sends state PERMANENT; the
    kernel ignores it on delete)."""
    addr = ipaddress.ip_address(ip)
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    body = nl.NDMSG.pack(family, index, nl.NUD_PERMANENT, 0, 0) + attr(nl.NDA_DST, addr.packed)
    return Request(nl.RTM_DELNEIGH, 0, body, f"delete neighbour {ip}",
                   lambda: ("ip", "neigh", "del", str(addr), "dev", Dev(index)))


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dst: str  # remote VTEP ("" if the entry has none)


def fdb_entries(rt: nl.Netlink, index: int) -> set[FdbEntry]:
    """The FDB entries with a remote destination on VXLAN device ``index``
    (``bridge fdb show dev VX``, the ``self`` ones)."""
    out = set()
    for r in rt.dump(nl.RTM_GETNEIGH, nl.NDMSG.pack(AF_BRIDGE, index, 0, 0, 0)):
        if r.msg_type != nl.RTM_NEWNEIGH:
            continue
        _fam, ifindex, _state, _flags, _type = nl.NDMSG.unpack_from(r.body)
        a = nl.parse_attrs(r.body, nl.NDMSG.size)
        if ifindex != index or nl.NDA_DST not in a or NDA_LLADDR not in a:
            continue
        out.add(FdbEntry(a[NDA_LLADDR].hex(":"), str(ipaddress.ip_address(a[nl.NDA_DST]))))
    return out


def permanent_neighbours(rt: nl.Netlink, index: int) -> set[tuple[str, str]]:
    """(IP, MAC) of the permanent neighbour entries, IPv4 and IPv6, on
    device ``index`` (one dump per family: AF_UNSPEC would add the bridge's
    FDB dump to it)."""
    out = set()
    for r in [*rt.dump(nl.RTM_GETNEIGH, nl.NDMSG.pack(socket.AF_INET, index, 0, 0, 0)),
              *rt.dump(nl.RTM_GETNEIGH, nl.NDMSG.pack(socket.AF_INET6, index, 0, 0, 0))]:
        if r.msg_type != nl.RTM_NEWNEIGH:
            continue
        _fam, ifindex, state, _flags, _type = nl.NDMSG.unpack_from(r.body)
        a = nl.parse_attrs(r.body, nl.NDMSG.size)
        if ifindex == index and state & nl.NUD_PERMANENT and nl.NDA_DST in a \
                and NDA_LLADDR in a:
            out.add((str(ipaddress.ip_address(a[nl.NDA_DST])), a[NDA_LLADDR].hex(":")))
    return out


__all__ = ["VXLAN_PORT", "FdbEntry", "VxlanSpec", "fdb_entries", "overlay_mtu",
           "permanent_neighbours", "req_fdb_append", "req_fdb_del", "req_neigh_del",
           "req_neigh_replace", "req_new_vxlan"]
