"""Conntrack entries (ctnetlink): forget stale UDP flows of a published port.

UDP has no connection end, so a conntrack entry made before a port mapping
existed (or for a mapping since removed) keeps steering a client's packets
the old way for as long as the client keeps sending (moby/moby#8795).  When
a UDP mapping changes nsnet deletes the entries whose original destination
is that host port.
"""

from __future__ import annotations

import errno
import socket
import struct

from .netlink import NLA_F_NESTED, Netlink, Request, attr, parse_attrs
from .netns import Netns, entered
from .record import Note

__all__ = ["forget_udp"]

NETLINK_NETFILTER = 12
_CT_GET = (1 << 8) | 1  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
_CT_DELETE = (1 << 8) | 2
CTA_TUPLE_ORIG, CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 1, 2
CTA_IP_V4_DST = 2
CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 1, 3
IPPROTO_UDP = 17
_NFGEN = struct.pack("=BBH", socket.AF_INET, 0, 0)


def _udp_dest(orig: bytes) -> tuple[str, int] | None:
    tuple_ = parse_attrs(orig)
    proto = parse_attrs(tuple_.get(CTA_TUPLE_PROTO, b""))
    if proto.get(CTA_PROTO_NUM, b"\0")[0] != IPPROTO_UDP or CTA_PROTO_DST_PORT not in proto:
        return None
    dst = parse_attrs(tuple_.get(CTA_TUPLE_IP, b"")).get(CTA_IP_V4_DST)
    if dst is None:
        return None
    return socket.inet_ntoa(dst[:4]), struct.unpack(">H", proto[CTA_PROTO_DST_PORT][:2])[0]


def req_ct_delete(orig: bytes) -> Request:
    """Delete the conntrack entry of this original tuple (as dumped)."""
    def cmd() -> tuple:
        dest = _udp_dest(orig)
        return ("conntrack", "-D", "-p", "udp", "--orig-dst", dest[0], "--dport", dest[1],
                Note("nsnet deletes each entry of that destination by its whole tuple; "
                     "this deletes the same entries")) if dest else ()
    return Request(_CT_DELETE, 0, _NFGEN + attr(CTA_TUPLE_ORIG | NLA_F_NESTED, orig),
                   "delete a conntrack entry", cmd)


def forget_udp(ns: Netns, ports: set[tuple[str, int]]) -> int:
    """Delete UDP entries in ``ns`` whose original destination is one of
    ``ports`` ((host_ip, port); host_ip "" = any address).  Returns how many."""
    if not ports:
        return 0
    with entered(ns.fd):
        nl = Netlink(NETLINK_NETFILTER)
    with nl:
        doomed = []
        for reply in nl.dump(_CT_GET, _NFGEN):
            orig = parse_attrs(reply.body, len(_NFGEN)).get(CTA_TUPLE_ORIG)
            dest = _udp_dest(orig) if orig else None
            if dest and orig and (dest in ports or ("", dest[1]) in ports):
                doomed.append(req_ct_delete(orig))
        errors = nl.batch(doomed).errors
    return sum(1 for err, _ in errors if err in (0, errno.ENOENT))
