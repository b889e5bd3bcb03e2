"""The IPv6 rtnetlink requests, byte for byte against iproute2's ``ip``.

Each tests/unit/golden/ipv6/*.hex holds what ``ip COMMAND`` (iproute2 6.1)
sent, captured with strace by capture.sh (first line: the command).  The
capture starts with ip's own RTM_GETLINK lookup of the device name; the
request compared is the address/route message after it.  nsnet's builder
must produce the same bytes except the header's sequence number and the
interface index (ip's and the capture namespace's choices, masked).
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest

from nsnet.kernel import netlink as nl
from nsnet.kernel import req_add_addr, req_add_route6, req_del_route6
from nsnet.kernel.icmp import _ECHO_REPLY6, Pinger, _packet6
from nsnet.kernel.ipv6 import ipv6_gateway_sysctls, ipv6_interface_sysctls

GOLDEN = Path(__file__).parent / "golden" / "ipv6"
IFINDEX = 3  # d0 in the capture namespace (lo 1, d1 2... as ip assigned them)


def _captured(name: str) -> tuple[str, bytes]:
    lines = (GOLDEN / f"{name}.hex").read_text().splitlines()
    data = bytes.fromhex("".join(lines[1:]))
    offset, wanted = 0, None
    while offset < len(data):
        length, mtype = struct.unpack_from("=IH", data, offset)
        if mtype != nl.RTM_GETLINK:
            wanted = data[offset : offset + length]
        offset += (length + 3) & ~3
    assert wanted is not None, name
    return lines[0].removeprefix("# ip "), wanted


def _framed(req: nl.Request) -> bytes:
    flags = req.flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(req.body), req.msg_type, flags, 0, 0) + req.body


def _masked(message: bytes, index_at: int | None) -> bytes:
    out = bytearray(message)
    out[8:12] = b"\0" * 4  # seq
    if index_at is not None:
        out[index_at : index_at + 4] = b"\0" * 4
    return bytes(out)


def _oif_offset(message: bytes) -> int | None:
    """Where RTA_OIF's value sits in a route message, if present."""
    offset = 16 + nl.RTMSG.size
    while offset < len(message):
        length, kind = struct.unpack_from("=HH", message, offset)
        if kind == nl.RTA_OIF:
            return offset + 4
        offset += (length + 3) & ~3
    return None


ADDRESSES = [("addr_nodad", "fd00:1::2/64", True), ("addr_nodad_doc", "2001:db8:5::1234/48", True),
             ("addr_v4", "10.1.0.2/24", False)]


@pytest.mark.parametrize(("name", "cidr", "nodad"), ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_address_add_matches_ip(name, cidr, nodad):
    command, captured = _captured(name)
    assert cidr in command and ("nodad" in command) == nodad
    ours = _framed(req_add_addr(IFINDEX, cidr, nodad=nodad))
    assert _masked(ours, 20) == _masked(captured, 20)
    assert struct.unpack_from("=I", captured, 20)[0] == IFINDEX  # the index we mask is it


ROUTES = [("route_default", "default", "fd00:1::1"),
          ("route_prefix", "2001:db8:9::/64", "fd00:1::1"),
          ("route_onlink", "2001:db8:7::/64", None)]


@pytest.mark.parametrize(("name", "dst", "gateway"), ROUTES, ids=[r[0] for r in ROUTES])
def test_route_add_matches_ip(name, dst, gateway):
    command, captured = _captured(name)
    assert dst in command
    ours = _framed(req_add_route6(dst, gateway, oif=IFINDEX))
    at = _oif_offset(captured)
    assert at is not None and _oif_offset(ours) == at
    assert _masked(ours, at) == _masked(captured, at)


def test_route_del_default_matches_ip():
    _command, captured = _captured("route_del_default")
    assert _masked(_framed(req_del_route6("default")), None) == _masked(captured, None)


def test_v6_route_builders_refuse_v4():
    with pytest.raises(ValueError):
        req_add_route6("10.0.0.0/24")
    with pytest.raises(ValueError):
        req_add_route6("default", "10.0.0.1")


def test_interface_sysctls_switch_ipv6_on_last():
    values = ipv6_interface_sysctls("eth0")
    assert list(values)[-1] == "net/ipv6/conf/eth0/disable_ipv6"
    assert values == {"net/ipv6/conf/eth0/accept_ra": "0", "net/ipv6/conf/eth0/autoconf": "0",
                      "net/ipv6/conf/eth0/accept_dad": "0",
                      "net/ipv6/conf/eth0/addr_gen_mode": "1",
                      "net/ipv6/conf/eth0/disable_ipv6": "0"}
    gateway = ipv6_gateway_sysctls("br0")  # keeps a link-local address, switched on last
    assert gateway["net/ipv6/conf/br0/addr_gen_mode"] == "0"
    assert list(gateway)[-1] == "net/ipv6/conf/br0/disable_ipv6"


def test_icmpv6_echo_request_and_reply_matching():
    packet = _packet6(0x1234, 7, b"abc")
    assert packet == bytes([128, 0, 0, 0, 0x12, 0x34, 0, 7]) + b"abc"  # kernel sums it
    pinger = Pinger.__new__(Pinger)  # no socket: matching only
    pinger.ident, pinger.sent, pinger.names = 0x1234, {("fd00::2", 7): 0.0}, {"fd00::2": "fd00::2"}
    reply = struct.pack("!BBHHH", _ECHO_REPLY6, 0, 0, 0x1234, 7) + b"x" * 8
    assert pinger._match6(reply[:4] + b"\0\0" + reply[6:], "fd00::2", 64) is None  # other id
    spelled = ipaddress.ip_address("fd00::2").exploded  # replies may come spelled out
    echo = pinger._match6(reply, spelled, 64)
    assert echo is not None and (echo.target, echo.seq, echo.ttl) == ("fd00::2", 7, 64)
    assert pinger.sent == {}
