"""kernel/views.py: what reconcile reads inside each endpoint's namespace.

The dump requests, byte for byte against iproute2's ``ip``
(golden/views/*.hex, captured by golden/views/capture.sh), the ioctl's
struct ifreq against the C layout, and the decoding of the kernel's own
answers to exactly those questions (golden/views/replies.json, captured by
capture_replies.py in a throwaway namespace), fed to the reader through a
fake socket: no root needed.
"""

from __future__ import annotations

import ctypes
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


# ------------------------------------------------------------ ifreq
class _Ifreq(ctypes.Structure):
    """<linux/if.h>'s struct ifreq, as C lays it out."""

    class _U(ctypes.Union):
        _fields_ = [("flags", ctypes.c_short), ("ifindex", ctypes.c_int),
                    ("addr", ctypes.c_byte * 16), ("map", ctypes.c_byte * 24)]

    _fields_ = [("name", ctypes.c_char * 16), ("u", _U)]


def test_ifreq_layouts_are_cs():
    assert views.IFREQ_FLAGS.size == views.IFREQ_INDEX.size == ctypes.sizeof(_Ifreq) == 40
    c = _Ifreq(b"eth0")
    c.u.flags = -4093  # IFF_UP|... with the sign bit: the short's two bytes
    assert views.IFREQ_FLAGS.pack(b"eth0", -4093) == bytes(c)
    c.u.ifindex = 123456
    assert views.IFREQ_INDEX.pack(b"eth0", 123456) == bytes(c)


# ------------------------------------------------------------ decoding
class FakeSocket:
    """Answers each dump request with the recvs the kernel answered it with."""

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


@pytest.fixture
def ioctls(monkeypatch):
    """The link's ioctl answers, as captured (None: no such link)."""
    answers: dict[str, tuple[int, int] | None] = {}
    monkeypatch.setattr(views, "flags_and_index", lambda sock, ifname: answers[ifname])
    return answers


def _read(ioctls, case: dict) -> tuple[views.Snapshot, FakeSocket]:
    ioctls[case["ifname"]] = tuple(case["link"]) if case["link"] else None
    sock = FakeSocket(case["sends"])
    with views.InsideReader() as reader:
        snap = reader._read(sock, case["ifname"], case["family"])  # type: ignore[arg-type]
    assert not sock.queue and not sock.answers  # every reply read, nothing more asked
    return snap, sock


def test_an_endpoint_inside_as_the_kernel_answers_it(ioctls):
    snap, sock = _read(ioctls, REPLIES["v4"])
    flags, index = REPLIES["v4"]["link"]
    link = snap.link("eth0")
    assert link is not None and link.index == index and link.up and link.flags == flags
    assert [a.cidr for a in snap.addresses_of("eth0")] == ["10.1.0.2/24"]
    # only the main table's default routes: not the prefix or the static route
    assert [(rt.dst, rt.gateway, rt.oif) for rt in snap.routes] == [("default", "10.1.0.1",
                                                                    index)]
    # the link's addresses, then the routes: the requests ip sends for the same
    assert sock.sent == [views.frame(r.req_dump_addresses(socket.AF_INET, index),
                                     views._DUMP_ADDRESSES),
                         views.frame(r.req_dump_routes(socket.AF_INET), views._DUMP_ROUTES)]


def test_without_strict_checking_the_decoding_filters_the_same(ioctls):
    """A kernel that ignores the dumps' filters (before 4.20) sends every
    address and every table's routes: the result is the same."""
    case = REPLIES["v4_not_strict"]
    assert len(case["sends"][1][0]) > len(REPLIES["v4"]["sends"][1][0])  # more came back
    snap, _ = _read(ioctls, case)
    strict, _ = _read(ioctls, REPLIES["v4"])
    assert [a.cidr for a in snap.addresses] == [a.cidr for a in strict.addresses]
    assert snap.routes == strict.routes


def test_an_ipv6_inside(ioctls):
    snap, _ = _read(ioctls, REPLIES["v6"])
    assert snap.addresses_of("eth0")[0].cidr == "fd00:1::2/64"
    assert all(a.cidr.startswith("fe80:") for a in snap.addresses_of("eth0")[1:])  # its own
    assert [(rt.dst, rt.gateway) for rt in snap.routes] == [("default", "fd00:1::1")]


def test_a_missing_link_is_an_empty_view_and_no_dump(ioctls):
    snap, sock = _read(ioctls, REPLIES["missing"])
    assert snap.links == [] and snap.addresses == [] and snap.routes == []
    assert sock.sent == []


def _error(seq: int, err: int) -> str:
    body = struct.pack("=i", -err) + b"\0" * 16
    return (struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, seq, 0) + body).hex()


def test_an_interrupted_dump_is_read_again(ioctls):
    case = REPLIES["v4"]
    ioctls["eth0"] = tuple(case["link"])
    interrupted = [case["sends"][0], [_error(views._DUMP_ROUTES, errno.EINTR)]]
    sockets = [FakeSocket(interrupted), FakeSocket(case["sends"])]
    with views.InsideReader() as reader:
        reader._socket_in = lambda fd: sockets.pop(0)  # type: ignore[method-assign]
        snap = reader.view_in(-1, "eth0")
    assert not sockets and [a.cidr for a in snap.addresses] == ["10.1.0.2/24"]


def test_other_errors_are_raised(ioctls):
    case = REPLIES["v4"]
    ioctls["eth0"] = tuple(case["link"])
    with views.InsideReader() as reader:
        sock = FakeSocket([case["sends"][0], [_error(views._DUMP_ROUTES, errno.EINVAL)]])
        with pytest.raises(nl.NetlinkError) as exc:
            reader._read(sock, "eth0", socket.AF_INET)  # type: ignore[arg-type]
        assert exc.value.errno == errno.EINVAL


def test_the_ioctls_answer_for_a_link_of_this_namespace_and_none_for_a_missing_one():
    """flags_and_index needs no privilege: lo of whatever namespace runs the tests."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        flags, index = views.flags_and_index(sock, "lo")  # type: ignore[misc]
        assert index == socket.if_nametoindex("lo") and flags & 0x8  # IFF_LOOPBACK
        assert views.flags_and_index(sock, "nsnet-none0") is None


def test_the_hosts_link_dump_asks_for_no_statistics(monkeypatch):
    """reconcile's dump of every host link (5000 at scale) leaves out the
    statistics nothing reads; the links decoded are the same."""
    asked = []
    rt = r.Rtnl.__new__(r.Rtnl)
    monkeypatch.setattr(r.Rtnl, "dump", lambda self, t, body: asked.append((t, body)) or [])
    assert rt.links() == []
    ((msg_type, body),) = asked
    assert msg_type == nl.RTM_GETLINK and nl.IFINFO.unpack_from(body) == (0, 0, 0, 0, 0)
    mask = nl.parse_attrs(body, nl.IFINFO.size)[r.IFLA_EXT_MASK]
    assert nl.u32(mask) == r.RTEXT_FILTER_SKIP_STATS == 1 << 3  # <linux/rtnetlink.h>
