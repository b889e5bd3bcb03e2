"""Who listens on which port, in one namespace (for published ports).

Publishing HOST_PORT over a host service would silently divert the
service's traffic to an endpoint (the DNAT comes first), so nsnet looks
before it publishes, as Docker does when it binds the port ("port is
already allocated").  First a bind test per mapping (a socket bound and
closed inside the namespace: microseconds, and exactly the kernel's own
notion of "in use", e.g. a v6-only listener does not block IPv4); only a
port it finds taken is looked up further.  Then the kernel is asked
through sock_diag (netlink),
from a socket opened inside the namespace, for TCP sockets in LISTEN and
UDP sockets not connected to a peer only: the kernel filters by state, so
the cost follows the number of servers, not of connections (a busy host's
``/proc/net/tcp`` lists every connection).  The owner of a socket (a scan
of every process's file descriptors) is looked up only for the listener
that conflicts.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from .netlink import Netlink
from .netns import Netns, entered

__all__ = ["Listener", "busy_ports", "listeners", "socket_owner"]

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
# (sport, dport, src[16], dst[16], if, cookie[8])
_REQ = struct.Struct("=BBBxI48x")


@dataclass(frozen=True)
class Listener:
    proto: str  # "tcp" | "udp"
    address: str  # as the socket is bound: "0.0.0.0", "::", "127.0.0.1", "::ffff:1.2.3.4"
    port: int
    inode: int


def _decode(body: bytes, proto: str) -> Listener:
    family = body[0]
    sport = struct.unpack_from("!H", body, 4)[0]
    size = 4 if family == socket.AF_INET else 16
    address = socket.inet_ntop(family, body[8 : 8 + size])
    inode = struct.unpack_from("=I", body, 4 + 48 + 16)[0]
    return Listener(proto, address, sport, inode)


_KINDS = {"tcp": (socket.IPPROTO_TCP, TCP_LISTEN), "udp": (socket.IPPROTO_UDP, TCP_CLOSE)}


def listeners(ns: Netns, protos: tuple[str, ...] = ("tcp", "udp")) -> list[Listener]:
    """Every TCP listener and/or unconnected bound UDP socket of ``ns``."""
    with entered(ns.fd):
        nl = Netlink(NETLINK_SOCK_DIAG)
    out: list[Listener] = []
    with nl:
        for proto in protos:
            num, state = _KINDS[proto]
            for family in (socket.AF_INET, socket.AF_INET6):
                for reply in nl.dump(SOCK_DIAG_BY_FAMILY, _REQ.pack(family, num, 0, 1 << state)):
                    if reply.msg_type == SOCK_DIAG_BY_FAMILY:
                        out.append(_decode(reply.body, proto))
    return out


def busy_ports(ns: Netns, wanted: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    """Those of ``wanted`` -- (proto, address of either family or "" for all, port) -- that
    a bind in ``ns`` finds in use (by a server, or by any other socket)."""
    busy = set()
    with entered(ns.fd):
        for proto, address, port in wanted:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, kind | socket.SOCK_CLOEXEC) as probe:
                try:
                    probe.bind((address or "0.0.0.0", port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        busy.add((proto, address, port))
    return busy


def socket_owner(inode: int) -> str | None:
    """'pid N (comm)' of a process holding socket ``inode``, if one is visible."""
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"pid {pid} ({f.read().strip()})"
        except OSError:
            continue  # gone, or not ours to read
    return None
