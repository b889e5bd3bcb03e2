"""kernel/conntrack.py's delete request against conntrack-tools'
``conntrack -D`` (the independent encoder), captured once by
tests/unit/golden/conntrack/capture.sh in a throwaway namespace.

conntrack -D works as nsnet does: it dumps the table, then deletes each
matching entry by its tuple.  Its delete also carries the entry's reply
tuple, status, timeout and mark; the kernel (ctnetlink_del_conntrack) finds
the entry by the original tuple alone and reads none of the others, so
nsnet sends the original tuple only.  Everything nsnet does send is
conntrack's byte for byte.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from nlattrs import attr_list

from nsnet.kernel import conntrack as ct
from nsnet.kernel import netlink as nl

GOLDEN = Path(__file__).parent / "golden" / "conntrack" / "ct_delete_udp.hex"
CTA_TUPLE_REPLY, CTA_STATUS, CTA_TIMEOUT, CTA_MARK = 2, 3, 7, 8


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _tuple(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A UDP tuple as the kernel dumps it (ctnetlink_dump_tuples)."""
    ip = _attr(1, socket.inet_aton(src)) + _attr(2, socket.inet_aton(dst))
    proto = (_attr(1, bytes([17])) + _attr(2, struct.pack(">H", sport))
             + _attr(3, struct.pack(">H", dport)))
    return (_attr(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED, ip)
            + _attr(ct.CTA_TUPLE_PROTO | nl.NLA_F_NESTED, proto))


def test_delete_is_conntracks_request_less_what_the_kernel_ignores():
    lines = GOLDEN.read_text().splitlines()
    captured = bytes.fromhex("".join(lines[1:]))
    orig = _tuple("127.0.0.1", "127.0.0.1", 40000, 5353)
    req = ct.req_ct_delete(orig)

    hdr = struct.pack("=HH", req.msg_type, req.flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    assert captured[4:8] == hdr
    assert captured[16:20] == req.body[:4]  # nfgenmsg: AF_INET, version 0
    theirs = attr_list(captured, 20)
    assert [k for k, _ in theirs] == [ct.CTA_TUPLE_ORIG | nl.NLA_F_NESTED,
                                      CTA_TUPLE_REPLY | nl.NLA_F_NESTED,
                                      CTA_STATUS, CTA_TIMEOUT, CTA_MARK]
    assert theirs[0][1] == orig  # the tuple as the kernel dumps it is conntrack's
    assert req.body == captured[16:20] + _attr(*theirs[0])

    words = [str(w) for w in req.cmd() if not isinstance(w, ct.Note)]
    assert lines[0] == "# " + " ".join(words)
