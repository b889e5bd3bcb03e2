"""ICMP and ICMPv6 echo from inside a namespace, in Python (no ``ping`` binary).

One :class:`Pinger` speaks both families: a target's family picks the raw
socket (opened on first use, inside the namespace).  ICMPv6 differs in
three ways handled here: other type numbers (128/129), the checksum covers
a pseudo-header and is filled in by the kernel (always on for raw ICMPv6
sockets, RFC 3542 3.1), and a received datagram starts at the ICMPv6
header, the hop limit coming as ancillary data (IPV6_HOPLIMIT).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .netns import entered

_ECHO_REQUEST, _ECHO_REPLY = 8, 0
_ECHO_REQUEST6, _ECHO_REPLY6 = 128, 129
_IPV6_RECVHOPLIMIT, _IPV6_HOPLIMIT = 51, 52  # linux/in6.h


@dataclass(frozen=True)
class Echo:
    target: str
    seq: int
    rtt_ms: float | None  # None: no reply within the timeout
    ttl: int = 0
    size: int = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _packet(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", _ECHO_REQUEST, 0, 0, ident, seq)
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", _ECHO_REQUEST, 0, csum, ident, seq) + payload


def _packet6(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMPv6 echo request; checksum 0: the kernel computes it."""
    return struct.pack("!BBHHH", _ECHO_REQUEST6, 0, 0, ident, seq) + payload


def open_icmp(netns_fd: int, version: int = 4) -> socket.socket:
    with entered(netns_fd):
        if version == 4:
            return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
    return sock


def _norm(target: str) -> tuple[str, int]:
    """The canonical text of an address (replies come back compressed) and
    its family."""
    try:
        ip = ipaddress.ip_address(target.split("%")[0])
    except ValueError:
        return target, 4  # a name: the IPv4 socket resolves it, as before
    return str(ip), ip.version


class Pinger:
    """Sends echo requests to several targets from one raw socket and
    matches replies by (source, id, seq)."""

    PAYLOAD = bytes(range(56))

    def __init__(self, netns_fd: int) -> None:
        self.netns_fd = netns_fd
        self.socks: dict[int, socket.socket] = {4: open_icmp(netns_fd)}
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.sent: dict[tuple[str, int], float] = {}
        self.names: dict[str, str] = {}  # canonical address -> the caller's spelling

    @property
    def sock(self) -> socket.socket:  # the IPv4 socket (callers before IPv6)
        return self.socks[4]

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def _sock(self, version: int) -> socket.socket:
        if version not in self.socks:
            self.socks[version] = open_icmp(self.netns_fd, version)
        return self.socks[version]

    def send(self, target: str, seq: int) -> None:
        addr, version = _norm(target)
        self.names[addr] = target
        self.sent[(target, seq)] = time.monotonic()
        packet = (_packet if version == 4 else _packet6)(self.ident, seq, self.PAYLOAD)
        with contextlib.suppress(OSError):  # unreachable network: counted as lost
            self._sock(version).sendto(packet, (addr, 0))

    def receive(self, deadline: float) -> Iterator[Echo]:
        """Yield replies until ``deadline`` or until nothing is outstanding."""
        while self.sent and (left := deadline - time.monotonic()) > 0:
            ready = select.select(list(self.socks.values()), [], [], left)[0]
            if not ready:
                return
            for sock in ready:
                echo = self._receive_one(sock)
                if echo:
                    yield echo

    def _receive_one(self, sock: socket.socket) -> Echo | None:
        if sock.family == socket.AF_INET:
            data, (src, _) = sock.recvfrom(65535)
            return self._match(data, src)
        data, ancillary, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(4))
        hops = next((struct.unpack("=i", d[:4])[0] for level, kind, d in ancillary
                     if level == socket.IPPROTO_IPV6 and kind == _IPV6_HOPLIMIT), 0)
        return self._match6(data, peer[0], hops)

    def _match(self, data: bytes, src: str) -> Echo | None:
        ihl = (data[0] & 0x0F) * 4
        kind, _code, _c, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
        if kind != _ECHO_REPLY or ident != self.ident:
            return None
        return self._answered(src, seq, data[8], len(data) - ihl)

    def _match6(self, data: bytes, src: str, hops: int) -> Echo | None:
        if len(data) < 8:
            return None
        kind, _code, _c, ident, seq = struct.unpack_from("!BBHHH", data)
        if kind != _ECHO_REPLY6 or ident != self.ident:
            return None
        return self._answered(src, seq, hops, len(data))

    def _answered(self, src: str, seq: int, ttl: int, size: int) -> Echo | None:
        target = self.names.get(_norm(src)[0], src)
        started = self.sent.pop((target, seq), None)
        if started is None:
            return None
        rtt = (time.monotonic() - started) * 1000
        return Echo(target, seq, rtt, ttl=ttl, size=size)


def ping(netns_fd: int, target: str, count: int, interval: float,
         timeout: float) -> Iterator[Echo]:
    """Like ``ping -c COUNT -i INTERVAL -W TIMEOUT``: one Echo per request."""
    pinger = Pinger(netns_fd)
    try:
        for seq in range(1, count + 1):
            tick = time.monotonic()
            pinger.send(target, seq)
            last = seq == count
            yield from pinger.receive(tick + (timeout if last else interval))
            if not last:
                time.sleep(max(0.0, tick + interval - time.monotonic()))
        for lost_target, lost_seq in sorted(pinger.sent):
            yield Echo(lost_target, lost_seq, None)
    finally:
        pinger.close()


def reachable(netns_fd: int, targets: list[str], timeout: float = 1.0, tries: int = 3,
              window: int = 8) -> dict[str, bool]:
    """Which targets answer an echo from this namespace.

    At most ``window`` probes are in flight: a first probe to an unresolved
    neighbour is an ARP broadcast flooded to every bridge port, and a burst
    of them overflows the receivers' backlog (1000 packets), so unpaced
    probing of 100 peers loses most of them.  Each window returns as soon as
    all its replies are in; failures are retried (ARP is warm by then)."""
    pinger = Pinger(netns_fd)
    ok = {t: False for t in targets}
    try:
        for attempt in range(1, tries + 1):
            pending = [t for t in targets if not ok[t]]
            for start in range(0, len(pending), window):
                for t in pending[start : start + window]:
                    pinger.send(t, attempt)
                for echo in pinger.receive(time.monotonic() + timeout / tries):
                    ok[echo.target] = True
                pinger.sent.clear()
    finally:
        pinger.close()
    return ok
