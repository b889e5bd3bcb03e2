"""kernel/views.py: what reconcile reads inside each endpoint's namespace.

The requests, byte for byte against iproute2's ``ip`` (golden/views/*.hex,
captured by golden/views/capture.sh), and the decoding of the kernel's own
replies to exactly those requests (golden/views/replies.json, captured by
capture_replies.py in a throwaway namespace), fed to the reader through a
fake socket: no root needed.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from pathlib import Path

import pytest

from nsnet.kernel import netlink as nl
from nsnet.kernel import rtnl as r
from nsnet.kernel import views

GOLDEN = Path(__file__).parent / "golden" / "views"
D0 = 3  # d0's ifindex in the capture namespace
REPLIES = json.loads((GOLDEN / "replies.json").read_text())

SAME = {  # golden name -> (ip arguments, nsnet's request for the same thing)
    "get_link": ("link show dev d0", r.req_get_link("d0")),
    "dump_addresses4": ("-4 addr show dev d0", r.req_dump_addresses(socket.AF_INET, D0)),
    "dump_addresses6": ("-6 addr show dev d0", r.req_dump_addresses(socket.AF_INET6, D0)),
    "dump_routes4": ("-4 route show table main", r.req_dump_routes(socket.AF_INET)),
    "dump_routes6": ("-6 route show table main", r.req_dump_routes(socket.AF_INET6)),
}


def _golden(name: str) -> tuple[str, bytes]:
    lines = (GOLDEN / f"{name}.hex").read_text().splitlines()
    assert lines[0].startswith("# ip "), name
    return lines[0][5:], bytes.fromhex("".join(lines[1:]))


def _seq0(message: bytes) -> bytes:
    return message[:8] + b"\0" * 4 + message[12:]


def test_every_capture_is_tested():
    assert {p.stem for p in GOLDEN.glob("*.hex")} == set(SAME)


@pytest.mark.parametrize("name", sorted(SAME))
def test_request_matches_ip_byte_for_byte(name: str):
    args, req = SAME[name]
    command, captured = _golden(name)
    assert command == args
    assert _seq0(views.frame(req, 7)) == _seq0(captured)
    assert struct.unpack_from("=I", views.frame(req, 7), 8)[0] == 7  # the seq is ours


# ------------------------------------------------------------ decoding
class FakeSocket:
    """Answers each send with the recvs the kernel answered it with."""

    def __init__(self, sends: list[list[str]]) -> None:
        self.answers = [[bytes.fromhex(h) for h in s] for s in sends]
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        self.queue += self.answers.pop(0)
        return len(data)

    def close(self) -> None:
        pass

    def recv_into(self, buf: bytearray) -> int:
        data = self.queue.pop(0)
        buf[:len(data)] = data
        return len(data)


def _read(case: dict, ifname: str | None = None) -> tuple[views.Snapshot, FakeSocket]:
    sock = FakeSocket(case["sends"])
    with views.InsideReader() as reader:
        snap = reader._read(sock, ifname or case["ifname"], case["family"])  # type: ignore[arg-type]
    assert not sock.queue and not sock.answers  # every reply read, nothing more asked
    return snap, sock


def test_an_endpoint_inside_as_the_kernel_answers_it():
    snap, sock = _read(REPLIES["v4"])
    index = REPLIES["v4"]["index"]
    link = snap.link("eth0")
    assert link is not None and link.index == index and link.up
    assert [a.cidr for a in snap.addresses_of("eth0")] == ["10.1.0.2/24"]
    # only the main table's default routes: not the prefix or the static route
    assert [(rt.dst, rt.gateway, rt.oif) for rt in snap.routes] == [("default", "10.1.0.1",
                                                                    index)]
    # two sends: the link by name with the route dump, then that link's addresses
    assert sock.sent == [views.frame(r.req_get_link("eth0"), views._GET_LINK)
                         + views.frame(r.req_dump_routes(socket.AF_INET), views._DUMP_ROUTES),
                         views.frame(r.req_dump_addresses(socket.AF_INET, index),
                                     views._DUMP_ADDRESSES)]


def test_without_strict_checking_the_decoding_filters_the_same():
    """A kernel that ignores the dumps' filters (before 4.20) sends every
    address and every table's routes: the result is the same."""
    case = REPLIES["v4_not_strict"]
    assert len(case["sends"][0][1]) > len(REPLIES["v4"]["sends"][0][1])  # more came back
    snap, _ = _read(case)
    strict, _ = _read(REPLIES["v4"])
    assert [a.cidr for a in snap.addresses] == [a.cidr for a in strict.addresses]
    assert snap.routes == strict.routes


def test_an_ipv6_inside():
    snap, _ = _read(REPLIES["v6"])
    assert snap.addresses_of("eth0")[0].cidr == "fd00:1::2/64"
    assert all(a.cidr.startswith("fe80:") for a in snap.addresses_of("eth0")[1:])  # its own
    assert [(rt.dst, rt.gateway) for rt in snap.routes] == [("default", "fd00:1::1")]


def test_a_missing_link_is_an_empty_view_and_no_address_dump():
    snap, sock = _read(REPLIES["missing"])
    assert snap.links == [] and snap.addresses == [] and snap.routes == []
    assert len(sock.sent) == 1


def _error(seq: int, err: int) -> str:
    body = struct.pack("=i", -err) + b"\0" * 16
    return (struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, seq, 0) + body).hex()


def test_an_interrupted_dump_is_read_again():
    case = REPLIES["v4"]
    sends = [[case["sends"][0][0], _error(views._DUMP_ROUTES, errno.EINTR)], *case["sends"]]
    sockets = [FakeSocket(sends[:1]), FakeSocket(case["sends"])]
    with views.InsideReader() as reader:
        reader._socket_in = lambda fd: sockets.pop(0)  # type: ignore[method-assign]
        snap = reader.view_in(-1, "eth0")
    assert not sockets and [a.cidr for a in snap.addresses] == ["10.1.0.2/24"]


def test_other_errors_are_raised():
    case = REPLIES["v4"]
    with views.InsideReader() as reader:
        sock = FakeSocket([[_error(views._GET_LINK, errno.EPERM), *case["sends"][0][1:]]])
        with pytest.raises(nl.NetlinkError) as exc:
            reader._read(sock, "eth0", socket.AF_INET)  # type: ignore[arg-type]
        assert exc.value.errno == errno.EPERM
        sock = FakeSocket([[case["sends"][0][0], _error(views._DUMP_ROUTES, errno.EINVAL)]])
        with pytest.raises(nl.NetlinkError):
            reader._read(sock, "eth0", socket.AF_INET)  # type: ignore[arg-type]
