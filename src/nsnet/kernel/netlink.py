"""A small rtnetlink codec and a batching socket.

Why not pyroute2 here: importing any pyroute2 module imports the whole
package (0.13 s and ~17 MB RSS measured on the target machine), and its
``IPRoute(netns=...)`` forks a helper per namespace.  nsnet needs the
opposite: a CLI/CNI start-up of a few tens of milliseconds, sockets opened
directly inside namespaces, and many requests per ``sendmsg``.  The subset
of rtnetlink nsnet speaks (links, addresses, routes) is small enough to
encode with :mod:`struct`; it lives only in this module.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import record

# message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELNEIGH = 29
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3

# header flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200

SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO = 10, 16, 18
IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 20, 27, 28, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

# address / route attributes
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 6, 7, 15
RT_TABLE_MAIN = 254
RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC = 2, 3, 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table proto scope type flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDA_DST = 1


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes of one message body; the last of a repeated type wins."""
    out: dict[int, bytes] = {}
    end = len(data) - 4
    unpack = _ATTR.unpack_from  # hot: every link of every dump (locals, inlined _align)
    while offset <= end:
        length, kind = unpack(data, offset)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def u32(raw: bytes) -> int:
    return struct.unpack_from("=I", raw)[0]


@dataclass
class Request:
    """One rtnetlink request waiting to be sent in a batch."""

    msg_type: int
    flags: int
    body: bytes
    what: str = ""  # human description used in error messages
    # the equivalent command, for --explain (see nsnet.kernel.record): called
    # only while recording (building it for every request would cost ~20% of
    # a builder's time), it returns words with record.Dev / record.Ns
    # placeholders for ifindexes and namespace fds
    cmd: Callable[[], tuple] = tuple


@dataclass
class Reply:
    msg_type: int
    body: bytes


@dataclass
class BatchResult:
    """Per-request outcome of :meth:`Netlink.batch` (errno 0 = success)."""

    errors: list[tuple[int, str]] = field(default_factory=list)

    def failures(self, requests: list[Request]) -> list[tuple[Request, int, str]]:
        return [(r, e, m) for r, (e, m) in zip(requests, self.errors, strict=False) if e]


# How many dumps of each message type this process made: a counting seam for
# tests that an operation's cost does not grow with what else exists (a full
# link dump in the host namespace reads every endpoint's host end).
DUMPS: Counter[int] = Counter()


class NetlinkError(OSError):
    def __init__(self, err: int, what: str, detail: str = "") -> None:
        text = os.strerror(err) + (f" ({detail})" if detail else "")
        super().__init__(err, f"{what}: {text}" if what else text)
        self.what = what
        self.detail = detail


class Netlink:
    """A netlink socket (NETLINK_ROUTE unless told) bound to whatever
    namespace it was opened in.

    Requests are pipelined: many messages go in one ``sendmsg`` and the acks
    are read back afterwards, matched by sequence number.
    """

    CHUNK = 256  # requests per sendmsg; bounded so acks never overflow rcvbuf

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  protocol)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))
        self.seq = 1
        # the namespace the socket lives in, for --explain only (a stat)
        self.netns_inode = record.ns_inode_here() if record.active() else 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frame(self, req: Request, extra_flags: int) -> tuple[int, bytes]:
        self.seq += 1
        flags = NLM_F_REQUEST | req.flags | extra_flags
        return self.seq, _HDR.pack(_HDR.size + len(req.body), req.msg_type, flags,
                                   self.seq, 0) + req.body

    def batch(self, requests: list[Request]) -> BatchResult:
        """Send all requests with ACK, pipelined; return one (errno, msg) each."""
        rec = record.active()
        if rec is not None and requests:
            links = self._link_names(requests)
            result = self._send(requests)
            rec.netlink(self.netns_inode, requests, links, result.errors)
            return result
        return self._send(requests)

    def _link_names(self, requests: list[Request]) -> dict[int, str]:
        """ifindex -> name in this socket's namespace, before the batch (a
        link it deletes is still named): only to print it (--explain)."""
        if not any(isinstance(w, record.Dev) for r in requests for w in r.cmd()):
            return {}
        out = {}
        for reply in self.dump(RTM_GETLINK, IFINFO.pack(0, 0, 0, 0, 0)):
            if reply.msg_type == RTM_NEWLINK:
                index = IFINFO.unpack_from(reply.body)[2]
                out[index] = cstr(parse_attrs(reply.body, IFINFO.size).get(IFLA_IFNAME, b""))
        return out

    def _send(self, requests: list[Request]) -> BatchResult:
        result = BatchResult()
        for start in range(0, len(requests), self.CHUNK):
            chunk = requests[start : start + self.CHUNK]
            frames = [self._frame(r, NLM_F_ACK) for r in chunk]
            self.sock.sendall(b"".join(f for _, f in frames))
            acks = self._read_acks({seq for seq, _ in frames})
            result.errors.extend(acks[seq] for seq, _ in frames)
        return result

    def run(self, requests: list[Request]) -> None:
        """Like :meth:`batch` but raise on the first failed request."""
        for req, err, detail in self.batch(requests).failures(requests):
            raise NetlinkError(err, req.what, detail)

    def _read_acks(self, pending: set[int]) -> dict[int, tuple[int, str]]:
        acks: dict[int, tuple[int, str]] = {}
        while pending:
            for mtype, flags, seq, body in self._recv():
                if mtype != NLMSG_ERROR or seq not in pending:
                    continue
                acks[seq] = _decode_error(flags, body)
                pending.discard(seq)
        return acks

    def _recv(self) -> Iterator[tuple[int, int, int, bytes]]:
        # into a reused buffer, then copied at its size: recv(1 MB) allocates
        # a fresh megabyte per call, 32 us against 9 for a small dump (a
        # reconcile makes 10,000 of those)
        buf = _recv_buffer()
        data = bytes(memoryview(buf)[: self.sock.recv_into(buf)])
        offset = 0
        while offset + _HDR.size <= len(data):
            length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            yield mtype, flags, seq, data[offset + _HDR.size : offset + length]
            offset += _align(length)

    def dump(self, msg_type: int, body: bytes) -> list[Reply]:
        """A NLM_F_DUMP request; returns every reply message body."""
        DUMPS[msg_type] += 1
        seq, frame = self._frame(Request(msg_type, NLM_F_DUMP, body), 0)
        self.sock.sendall(frame)
        out: list[Reply] = []
        while True:
            for mtype, flags, rseq, rbody in self._recv():
                if rseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err, detail = _decode_error(flags, rbody)
                    if err == _errno.EINTR:  # dump interrupted by a change: retry
                        return self.dump(msg_type, body)
                    raise NetlinkError(err, "dump", detail)
                out.append(Reply(mtype, rbody))

    def get_many(self, msg_type: int, bodies: list[bytes]) -> list[Reply | int]:
        """Many single (non-dump) requests, pipelined like :meth:`batch`:
        each one's reply, or its errno.  For looking up N named objects
        without dumping every object of the namespace."""
        out: list[Reply | int] = []
        step = self.CHUNK // 2  # a reply is a whole object (~1.5 kB a link), not an ack
        for start in range(0, len(bodies), step):
            frames = [self._frame(Request(msg_type, 0, b), 0) for b in bodies[start:start + step]]
            self.sock.sendall(b"".join(f for _, f in frames))
            pending = {seq for seq, _ in frames}
            got: dict[int, Reply | int] = {}
            while pending:
                for mtype, flags, seq, body in self._recv():
                    if seq not in pending:
                        continue
                    got[seq] = _decode_error(flags, body)[0] if mtype == NLMSG_ERROR \
                        else Reply(mtype, body)
                    pending.discard(seq)
            out += [got[seq] for seq, _ in frames]
        return out

    def get(self, msg_type: int, body: bytes, what: str) -> Reply:
        """A single (non-dump) request answered by one message."""
        seq, frame = self._frame(Request(msg_type, 0, body), 0)
        self.sock.sendall(frame)
        while True:
            for mtype, flags, rseq, rbody in self._recv():
                if rseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err, detail = _decode_error(flags, rbody)
                    raise NetlinkError(err, what, detail)
                return Reply(mtype, rbody)


_LOCAL = threading.local()


def _recv_buffer() -> bytearray:
    """This thread's receive buffer (1 MB, as the socket's reads)."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None:
        buf = _LOCAL.buf = bytearray(1 << 20)
    return buf


def _decode_error(flags: int, body: bytes) -> tuple[int, str]:
    err = -struct.unpack_from("=i", body)[0]
    detail = ""
    if err and flags & NLM_F_ACK_TLVS:
        # with NETLINK_CAP_ACK the original request is cut to its header
        detail = cstr(parse_attrs(body, 4 + _HDR.size).get(NLMSGERR_ATTR_MSG, b""))
    return err, detail
