"""Probes a diagnosis sends and reads from inside a namespace: ARP who-has
and its IPv6 twin, a neighbour solicitation (every MAC that answers), a TCP
connect, a UDP exchange, the listening sockets.  Sockets are opened inside
the namespace they probe (setns on this thread, then back), so the caller's
own namespace is never involved."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .netns import entered

ETH_P_ARP = 0x0806
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa


def arp_probe(netns_fd: int, ifname: str, target: str, source: str, mac: str,
              timeout: float = 0.5) -> list[str]:
    """Broadcast ``who-has target tell source`` on ``ifname`` and return
    every distinct MAC that answers within ``timeout`` (two or more: a
    duplicate address)."""
    own = bytes(int(p, 16) for p in mac.split(":"))
    with entered(netns_fd):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
        tpa, spa = ipaddress.IPv4Address(target).packed, ipaddress.IPv4Address(source).packed
        frame = b"\xff" * 6 + own + struct.pack("!H", ETH_P_ARP) + _ARP.pack(
            1, 0x0800, 6, 4, 1, own, spa, b"\0" * 6, tpa)
        sock.send(frame)

        def replier(data: bytes) -> list[bytes]:
            if len(data) < 14 + _ARP.size:
                return []
            _h, _p, _hl, _pl, op, sha, spa_r, _tha, _tpa = _ARP.unpack_from(data, 14)
            return [sha] if op == 2 and spa_r == tpa else []

        return _distinct_macs(sock, timeout, replier)
    finally:
        sock.close()


def _distinct_macs(sock: socket.socket, timeout: float,
                   macs_in: Callable[[bytes], list[bytes]]) -> list[str]:
    """Every distinct MAC that ``macs_in`` finds in what ``sock`` receives
    within ``timeout``, in the order they came."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        for raw in macs_in(sock.recv(256)):
            name = ":".join(f"{b:02x}" for b in raw)
            if name not in seen:
                seen.append(name)
    return seen


_NS, _NA = 135, 136  # ICMPv6 neighbour solicitation / advertisement (RFC 4861)
_SOURCE_LLA, _TARGET_LLA = 1, 2  # their link-layer address options


def ndp_probe(netns_fd: int, ifname: str, target: str, source: str, mac: str,
              timeout: float = 0.5) -> list[str]:
    """IPv6's ARP who-has: a neighbour solicitation for ``target`` from
    ``source`` to its solicited-node group on ``ifname``; every distinct
    MAC advertised back within ``timeout`` (two or more: a duplicate)."""
    tgt = ipaddress.IPv6Address(target)
    group = ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0"))
                                  | (int(tgt) & 0xFFFFFF))
    own = bytes(int(p, 16) for p in mac.split(":"))
    with entered(netns_fd):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        index = socket.if_nametoindex(ifname)  # the namespace's own, not the caller's
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        # RFC 4861 7.1.1: a neighbour message with a hop limit below 255 is ignored
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.bind((source, 0))
        # type, code, checksum (the kernel's), reserved, target, source link-layer option
        sock.sendto(struct.pack("!BBHI", _NS, 0, 0, 0) + tgt.packed +
                    bytes([_SOURCE_LLA, 1]) + own, (str(group), 0, 0, index))

        def advertised(data: bytes) -> list[bytes]:
            """The target link-layer addresses of an advertisement for ``tgt``."""
            if len(data) < 24 or data[0] != _NA or data[8:24] != tgt.packed:
                return []
            found, opts = [], data[24:]
            while len(opts) >= 8 and opts[1]:
                if opts[0] == _TARGET_LLA:
                    found.append(opts[2:8])
                opts = opts[opts[1] * 8:]
            return found

        return _distinct_macs(sock, timeout, advertised)
    finally:
        sock.close()


@dataclass(frozen=True)
class Listener:
    proto: str
    ip: str  # "0.0.0.0" / "::" for any
    port: int


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listeners(netns_fd: int) -> list[Listener]:
    """TCP sockets in LISTEN and bound UDP sockets of the namespace, from
    /proc/thread-self/net/{tcp,udp}{,6} read while inside it."""
    out = []
    with entered(netns_fd):
        for proto, name in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
            try:
                with open(f"/proc/thread-self/net/{name}") as f:
                    lines = f.readlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                ip, port = fields[1].split(":")
                if proto == "tcp" and fields[3] != "0A":  # 0A = LISTEN
                    continue
                out.append(Listener(proto, _hex_ip(ip), int(port, 16)))
    return out


def tcp_connect(netns_fd: int, ip: str, port: int, timeout: float = 1.0) -> str:
    """Try a TCP connection from inside the namespace: "open", "refused"
    (a RST or ICMP error came back), "unreachable" or "timeout" (dropped)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with entered(netns_fd):
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        err = sock.connect_ex((ip, port))
    except OSError as exc:
        err = exc.errno or errno.EIO
    finally:
        sock.close()
    return {0: "open", errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
            errno.ENETUNREACH: "unreachable", errno.EAGAIN: "timeout",
            errno.ETIMEDOUT: "timeout", errno.EINPROGRESS: "timeout"}.get(err, os_error(err))


def os_error(err: int) -> str:
    return errno.errorcode.get(err, str(err)).lower()


def udp_exchange(netns_fd: int, ip: str, port: int, payload: bytes,
                 timeout: float = 1.0) -> bytes | str:
    """Send one datagram from inside the namespace and return the first
    answer, or "refused" (ICMP port unreachable) / "timeout"."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with entered(netns_fd):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.send(payload)
        return sock.recv(65535)
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        if isinstance(exc, TimeoutError) or exc.errno in (errno.EAGAIN, None):
            return "timeout"
        return os_error(exc.errno)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
