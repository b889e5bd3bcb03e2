"""Hand-built Ethernet/IPv4|IPv6/UDP|TCP frames over AF_PACKET, and a sniffer.

An attacker on a LAN (or an endpoint that ignores its own routing table)
can put any frame on the wire: destination MAC of the host, destination IP
127.0.0.1, whatever port.  These helpers do exactly that from inside a
namespace, with correct IP/UDP/TCP checksums (conntrack marks a packet with
a bad checksum INVALID and NAT then ignores it: the attack would fail for
the wrong reason).  A :class:`Sniffer` on the victim's interface records
every frame carrying a given destination port, so a test can assert that an
attack packet never arrived -- whatever the transport did with it.

Sockets are opened inside the namespace (``setns`` on this thread, then
back) and used from here, as nsnet's kernel layer does.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
PROTO = {"udp": 17, "tcp": 6}
TCP_SYN = 0x02


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ipv4_packet(src: str, dst: str, proto: str, sport: int, dport: int,
                payload: bytes = b"nsnet-attack") -> bytes:
    """An IPv4 datagram (UDP, or a TCP SYN carrying nothing)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    num = PROTO[proto]
    if proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 0x1000, 0, 5 << 4, TCP_SYN, 64240, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, num, len(l4))
    csum = _checksum(pseudo + l4) or 0xFFFF
    at = 6 if proto == "udp" else 16
    l4 = l4[:at] + struct.pack("!H", csum) + l4[at + 2:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0x4000, 64, num, 0,
                         s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + l4


def _l4(pseudo: bytes, proto: str, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP (with ``payload``) or an empty TCP SYN, checksummed over ``pseudo``
    (the IP pseudo-header without the protocol and length, added here)."""
    if proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 0x1000, 0, 5 << 4, TCP_SYN, 64240, 0, 0)
    csum = _checksum(pseudo + struct.pack("!IxxxB", len(l4), PROTO[proto]) + l4) or 0xFFFF
    at = 6 if proto == "udp" else 16
    return l4[:at] + struct.pack("!H", csum) + l4[at + 2:]


def ipv6_packet(src: str, dst: str, proto: str, sport: int, dport: int,
                payload: bytes = b"nsnet-attack", hops: int = 64) -> bytes:
    """An IPv6 datagram (UDP, or a TCP SYN carrying nothing), any source."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    l4 = _l4(s + d, proto, sport, dport, payload)
    return struct.pack("!IHBB", 6 << 28, len(l4), PROTO[proto], hops) + s + d + l4


def ether_frame(src_mac: str, dst_mac: str, packet: bytes) -> bytes:
    kind = ETH_P_IPV6 if packet[0] >> 4 == 6 else ETH_P_IP
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", kind) + packet


@contextlib.contextmanager
def _in_netns(path: str) -> Iterator[None]:
    from nsnet.kernel import entered

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)


def link_mac(ns_path: str, ifname: str) -> str:
    out = subprocess.run(["nsenter", f"--net={ns_path}", "ip", "-j", "link", "show", ifname],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["address"]


def send_frame(ns_path: str, ifname: str, frame: bytes, count: int = 3) -> None:
    """Put ``frame`` on ``ifname`` of the namespace at ``ns_path`` (a few
    times: the first may race with a just-made neighbour or bridge entry)."""
    with _in_netns(ns_path):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with sock:
        sock.bind((ifname, 0))
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.05)


@dataclass
class Seen:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int


class Sniffer:
    """Every IPv4 or IPv6 TCP/UDP frame from or to one of ``ports`` seen on
    ``ifname`` of a namespace (both directions), from the moment it is opened."""

    def __init__(self, ns_path: str, ifname: str, *ports: int) -> None:
        with _in_netns(ns_path):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                      socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.ports = set(ports)
        self.seen: list[Seen] = []

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def collect(self, seconds: float = 1.0) -> list[Seen]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            frame = self.sock.recv(65535)
            seen = _parse(frame)
            if seen and {seen.sport, seen.dport} & self.ports:
                self.seen.append(seen)
        return self.seen


def _parse(frame: bytes) -> Seen | None:
    if len(frame) >= 14 + 40 + 4 and struct.unpack("!H", frame[12:14])[0] == ETH_P_IPV6:
        ip6 = frame[14:]
        if ip6[6] not in (6, 17):  # no extension headers in what is watched here
            return None
        sport, dport = struct.unpack("!HH", ip6[40:44])
        return Seen(socket.inet_ntop(socket.AF_INET6, ip6[8:24]),
                    socket.inet_ntop(socket.AF_INET6, ip6[24:40]), ip6[6], sport, dport)
    if len(frame) < 14 + 20 + 4 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    if proto not in (6, 17) or len(ip) < ihl + 4:
        return None
    sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
    return Seen(socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), proto, sport, dport)


class UdpListener:
    """A UDP socket bound inside a namespace that records what it receives
    (a host service an attacker must not reach)."""

    def __init__(self, ns_path: str, ip: str, port: int) -> None:
        with _in_netns(ns_path):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.got: list[tuple[bytes, tuple[str, int]]] = []

    def __enter__(self) -> UdpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def collect(self, seconds: float = 1.0) -> list[tuple[bytes, tuple[str, int]]]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            self.got.append(self.sock.recvfrom(65535))
        return self.got


class TcpListener:
    """A listening TCP socket inside a namespace (a host service)."""

    def __init__(self, ns_path: str, ip: str, port: int) -> None:
        with _in_netns(ns_path):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(8)

    def __enter__(self) -> TcpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
