"""Who listens on which port, in one namespace (for published ports).

Publishing HOST_PORT over a host service would silently divert the
service's traffic to an endpoint (the DNAT comes first), so nsnet looks
before it publishes, as Docker does when it binds the port ("port is
already allocated").  The tables are read from ``/proc/thread-self/net``
while this thread sits in the namespace: procfs shows the namespace of the
reading *thread*, so no process has to run there.  One read serves any
number of mappings; the owner of a socket (a scan of every process's file
descriptors) is looked up only for the listener that conflicts.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from .netns import Netns, entered

__all__ = ["Listener", "listeners", "socket_owner"]

_TCP_LISTEN = "0A"
_TABLES = (("tcp", "tcp", socket.AF_INET), ("tcp6", "tcp", socket.AF_INET6),
           ("udp", "udp", socket.AF_INET), ("udp6", "udp", socket.AF_INET6))


@dataclass(frozen=True)
class Listener:
    proto: str  # "tcp" | "udp"
    address: str  # as the socket is bound: "0.0.0.0", "::", "127.0.0.1", "::ffff:1.2.3.4"
    port: int
    inode: int


def _address(hexaddr: str, family: int) -> str:
    # the kernel prints each 32-bit word in host byte order
    words = [int(hexaddr[i : i + 8], 16) for i in range(0, len(hexaddr), 8)]
    return socket.inet_ntop(family, b"".join(struct.pack("=I", w) for w in words))


def _parse(text: str, proto: str, family: int) -> list[Listener]:
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        serving = state == _TCP_LISTEN if proto == "tcp" else remote.endswith(":0000")
        if serving:  # a TCP listener, or a UDP socket not connected to one peer
            addr, port = local.rsplit(":", 1)
            out.append(Listener(proto, _address(addr, family), int(port, 16), inode))
    return out


def listeners(ns: Netns) -> list[Listener]:
    """Every TCP listener and unconnected bound UDP socket of ``ns``."""
    texts = []
    with entered(ns.fd):
        for name, proto, family in _TABLES:
            try:
                with open(f"/proc/thread-self/net/{name}") as f:
                    texts.append((f.read(), proto, family))
            except FileNotFoundError:  # a kernel without IPv6
                continue
    return [lst for text, proto, family in texts for lst in _parse(text, proto, family)]


def socket_owner(inode: int) -> str | None:
    """'pid N (comm)' of a process holding socket ``inode``, if one is visible."""
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            for fd in fds:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"pid {pid} ({f.read().strip()})"
        except OSError:
            continue  # gone, or not ours to read
    return None
