"""The tc request builders of kernel/tc.py (the qdiscs and the loopback
guard; netem has its own test_netem.py) byte for byte against iproute2's
``tc``, the independent encoder.

Each tests/unit/golden/tc/*.hex holds the request ``tc ARGS`` (iproute2 6.1)
sent, captured with strace by capture.sh in a throwaway namespace; its first
line is the command, which is what nsnet's ``--explain`` prints for the
builder.  The bytes must be the same except the sequence number and the
differences named below, with their reasons.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from nlattrs import attr_list

from nsnet.kernel import netlink as nl
from nsnet.kernel import tc

GOLDEN = Path(__file__).parent / "golden" / "tc"
D0 = 3  # d0's ifindex in the capture namespace (lo 1, d1 2)
MARK = 0x4000  # the allow mark of the captured guard program
TCMSG_END = 16 + 20  # netlink header + struct tcmsg


def _golden(name: str) -> tuple[str, bytes]:
    lines = (GOLDEN / f"{name}.hex").read_text().splitlines()
    assert lines[0].startswith("# tc "), name
    return lines[0][5:], bytes.fromhex("".join(lines[1:]))


def _framed(req: nl.Request) -> bytes:
    flags = req.flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(req.body), req.msg_type, flags, 0, 0) + req.body


def _seq0(message: bytes) -> bytes:
    return message[:8] + b"\0" * 4 + message[12:]


def _command(req: nl.Request) -> str:
    """What --explain prints for ``req`` (d0 for the link), quoted as in the capture."""
    words = []
    for word in req.cmd():
        if isinstance(word, tc.Note):
            continue
        text = "d0" if isinstance(word, tc.Dev) else str(word)
        words.append(f'"{text}"' if " " in text else text)
    return " ".join(words[1:])


SAME = {
    "del_root_qdisc": tc.req_del_root_qdisc(D0),
    "clsact": tc.req_clsact(D0),
}


def test_every_capture_is_tested():
    assert {p.stem for p in GOLDEN.glob("*.hex")} == set(SAME) | {"loopback_guard", "tbf"}


@pytest.mark.parametrize("name", sorted(SAME))
def test_request_matches_tc_byte_for_byte(name: str):
    command, captured = _golden(name)
    assert _command(SAME[name]) == command
    assert _seq0(_framed(SAME[name])) == _seq0(captured)


def test_loopback_guard_differs_only_by_the_nested_flag():
    """nsnet flags TCA_OPTIONS NLA_F_NESTED (the kernel's strict validation
    prefers it); tc does not.  Everything else -- the tcmsg (handle, the
    clsact ingress parent, pref and protocol in tcm_info), the kind, the
    program and direct-action -- is tc's byte for byte."""
    req = tc.req_loopback_guard(D0, MARK)
    command, captured = _golden("loopback_guard")
    assert _command(req) == command
    ours = bytearray(_seq0(_framed(req)))
    options = TCMSG_END + 8  # after TCA_KIND "bpf\0"
    assert struct.unpack_from("=H", ours, options + 2)[0] == tc.TCA_OPTIONS | nl.NLA_F_NESTED
    struct.pack_into("=H", ours, options + 2, tc.TCA_OPTIONS)
    assert bytes(ours) == _seq0(captured)


def test_tbf_differs_only_by_the_rate_table():
    """tc also sends a 1 KiB rate table (TCA_TBF_RTAB) and, for it, a
    cell_log in the rate spec; the kernel has computed rates itself since
    3.8 (psched_ratecfg_precompute) and reads neither unless a table is
    given.  The rest -- tcmsg, kind, the parameters (limit, buffer in psched
    ticks, rate, link layer) and the burst -- is tc's byte for byte."""
    req = tc.req_tbf(D0, 10_000_000)
    command, captured = _golden("tbf")
    assert _command(req) == command
    ours, theirs = _seq0(_framed(req)), _seq0(captured)
    assert ours[16:TCMSG_END] == theirs[16:TCMSG_END]
    (kind_o, opts_o), (kind_t, opts_t) = attr_list(ours, TCMSG_END), attr_list(theirs, TCMSG_END)
    assert kind_o == kind_t
    assert opts_o[0] == tc.TCA_OPTIONS | nl.NLA_F_NESTED and opts_t[0] == tc.TCA_OPTIONS
    inner_o, inner_t = dict(attr_list(opts_o[1])), dict(attr_list(opts_t[1]))
    assert tc.TCA_TBF_RTAB in inner_t and len(inner_t.pop(tc.TCA_TBF_RTAB)) == 1024
    parms_t = bytearray(inner_t[tc.TCA_TBF_PARMS])
    assert parms_t[0] == 3 and inner_o[tc.TCA_TBF_PARMS][0] == 0  # cell_log
    parms_t[0] = 0
    inner_t[tc.TCA_TBF_PARMS] = bytes(parms_t)
    assert inner_o == inner_t
