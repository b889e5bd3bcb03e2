"""A sniffer of the ICMPv6 a bridge sees (router solicitations and
advertisements, neighbour solicitations, MLD), for tests that prove IPv6
stays quiet (#16)."""

from __future__ import annotations

import select
import socket
import struct
import time

from nsnet import kernel as k

ETH_P_ALL, ETH_P_IPV6 = 0x0003, 0x86DD
RS, RA, NS = 133, 134, 135
MLD = {130, 131, 132, 143}  # query, v1 report, v1 done, v2 report


class Sniffer:
    """Every frame the bridge device sees (snooping off: all multicast is
    flooded to it), as (ICMPv6 type, IPv6 source) pairs."""

    def __init__(self, host: k.Netns, bridge: str) -> None:
        with k.entered(host.fd):  # every interface of the host (the bridge may be down yet)
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.bridge = bridge
        self.seen: list[tuple[int, str]] = []
        self.reports: list[tuple[str, tuple[str, ...]]] = []  # MLDv2: (source, groups)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            frame, (ifname, *_rest) = self.sock.recvfrom(65535)
            icmp = icmpv6(frame) if ifname == self.bridge else None
            if icmp:
                self.seen.append(icmp)
                if icmp[0] == 143:
                    self.reports.append((icmp[1], mld2_groups(frame)))

    def close(self) -> None:
        self.sock.close()


def _icmpv6_offset(ip: bytes) -> int | None:
    nh, offset = ip[6], 40
    while nh == 0 and offset + 2 <= len(ip):  # hop-by-hop options (MLD carries one)
        nh, offset = ip[offset], offset + (ip[offset + 1] + 1) * 8
    return offset if nh == 58 and offset < len(ip) else None


def icmpv6(frame: bytes) -> tuple[int, str] | None:
    if len(frame) < 54 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    ip = frame[14:]
    offset = _icmpv6_offset(ip)
    if offset is None:
        return None
    return ip[offset], socket.inet_ntop(socket.AF_INET6, ip[8:24])


def mld2_groups(frame: bytes) -> tuple[str, ...]:
    """The multicast addresses of an MLDv2 report's records (RFC 3810 5.2)."""
    ip = frame[14:]
    at = _icmpv6_offset(ip) or 0
    count = struct.unpack_from("!H", ip, at + 6)[0]
    at += 8
    groups = []
    for _ in range(count):
        aux, sources = ip[at + 1], struct.unpack_from("!H", ip, at + 2)[0]
        groups.append(socket.inet_ntop(socket.AF_INET6, ip[at + 4:at + 20]))
        at += 20 + 16 * sources + 4 * aux
    return tuple(groups)


def solicited_node(address: str) -> str:
    """The solicited-node multicast group of ``address`` (RFC 4291 2.7.1)."""
    low = socket.inet_pton(socket.AF_INET6, address)[-3:]
    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex("ff02" + "00" * 9 + "01ff")
                            + low)
