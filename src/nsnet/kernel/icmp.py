"""ICMP echo from inside a namespace, in Python (no ``ping`` binary)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .netns import entered

_ECHO_REQUEST, _ECHO_REPLY = 8, 0


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


def open_icmp(netns_fd: int) -> socket.socket:
    with entered(netns_fd):
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


class Pinger:
    """Sends echo requests to several targets from one raw socket and
    matches replies by (source, id, seq)."""

    PAYLOAD = bytes(range(56))

    def __init__(self, netns_fd: int) -> None:
        self.sock = open_icmp(netns_fd)
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.sent: dict[tuple[str, int], float] = {}

    def close(self) -> None:
        self.sock.close()

    def send(self, target: str, seq: int) -> None:
        self.sent[(target, seq)] = time.monotonic()
        with contextlib.suppress(OSError):  # unreachable network: counted as lost
            self.sock.sendto(_packet(self.ident, seq, self.PAYLOAD), (target, 0))

    def receive(self, deadline: float) -> Iterator[Echo]:
        """Yield replies until ``deadline`` or until nothing is outstanding."""
        while self.sent and (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return
            data, (src, _) = self.sock.recvfrom(65535)
            echo = self._match(data, src)
            if echo:
                yield echo

    def _match(self, data: bytes, src: str) -> Echo | None:
        ihl = (data[0] & 0x0F) * 4
        kind, _code, _c, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
        if kind != _ECHO_REPLY or ident != self.ident:
            return None
        started = self.sent.pop((src, seq), None)
        if started is None:
            return None
        rtt = (time.monotonic() - started) * 1000
        return Echo(src, seq, rtt, ttl=data[8], size=len(data) - ihl)


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
