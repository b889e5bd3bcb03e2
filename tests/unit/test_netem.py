"""The netem qdisc request, byte for byte against iproute2's ``tc``.

Each tests/unit/golden/netem/*.hex holds the RTM_NEWQDISC message that
``tc qdisc add dev d0 root netem OPTIONS`` (iproute2 6.1) sent, captured with
strace by capture.sh; its first line is the command.  nsnet parses OPTIONS
with its own tc-syntax parser, encodes the request with ``req_netem`` and
must produce the same bytes, except the header's sequence number and the
interface index (tc's own choices, masked).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nsnet.kernel import netlink as nl
from nsnet.kernel.tc import (
    NetemSpec,
    netem_from_tc_args,
    parse_rate_Bps,
    parse_time_us,
    read_distribution,
    req_netem,
)

GOLDEN = Path(__file__).parent / "golden" / "netem"
CASES = sorted(GOLDEN.glob("*.hex"))
PREFIX = "# tc qdisc add dev d0 root netem "


def _golden(path: Path) -> tuple[list[str], bytes]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith(PREFIX), path
    return lines[0][len(PREFIX):].split(), bytes.fromhex("".join(lines[1:]))


def _framed(body: bytes, msg_type: int, flags: int) -> bytes:
    """The request as tc frames it: REQUEST|ACK, pid 0 (seq masked later)."""
    flags |= nl.NLM_F_REQUEST | nl.NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, 0, 0) + body


def _masked(message: bytes) -> bytes:
    """Zero the header's seq (bytes 8-11) and tcmsg's ifindex (bytes 20-23)."""
    out = bytearray(message)
    out[8:12] = b"\0" * 4
    out[20:24] = b"\0" * 4
    return bytes(out)


def test_there_are_golden_captures():
    assert len(CASES) >= 8
    assert any("distribution" in p.read_text().splitlines()[0] for p in CASES)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_request_matches_tc_byte_for_byte(path: Path):
    args, captured = _golden(path)
    req = req_netem(7, netem_from_tc_args(args), replace=False, handle=0)
    ours = _framed(req.body, req.msg_type, req.flags)
    assert len(ours) == len(captured)
    assert _masked(ours) == _masked(captured)


def test_the_brief_command_is_one_qdisc_with_everything():
    args, captured = _golden(GOLDEN / "delay_jitter_corr_normal_loss_rate.hex")
    assert " ".join(args) == "delay 50ms 10ms 25% distribution normal loss 1% rate 10mbit"
    spec = netem_from_tc_args(args)
    assert spec == NetemSpec(delay_us=50_000, jitter_us=10_000, delay_corr_pct=25,
                             distribution="normal", loss_pct=1, rate_Bps=1_250_000)
    assert len(captured) > 8192  # the 4096-entry normal table rides along


def test_units_parse_as_tc_parses_them():
    assert parse_time_us("1.5s") == 1_500_000
    assert parse_time_us("250us") == 250
    assert parse_rate_Bps("10mbit") == 1_250_000
    assert parse_rate_Bps("1kbps") == 1000


def test_distribution_tables_come_from_tc_files():
    normal = read_distribution("normal")
    assert len(normal) == 4096 and normal[0] == -32768
    with pytest.raises(ValueError):
        read_distribution("../etc/passwd")
    with pytest.raises(ValueError):
        read_distribution("nosuchtable")


def test_refuses_what_tc_refuses():
    with pytest.raises(ValueError, match="too large"):
        req_netem(1, NetemSpec(delay_us=300_000_000))  # tc: "Illegal ... too large"
    with pytest.raises(ValueError, match="distribution"):
        req_netem(1, NetemSpec(delay_us=1000, distribution="normal"))
    with pytest.raises(ValueError):
        req_netem(1, NetemSpec(loss_pct=101))


def test_topology_delay_and_jitter_send_what_tc_sends():
    """A topology link's ``delay: 20ms, jitter: 5ms`` becomes the very
    request of ``tc qdisc add ... netem delay 20ms 5ms`` (on a kernel with
    netem; here the topology is refused before this point)."""
    from nsnet.topology.apply import _netem
    from nsnet.topology.load import Emulation

    args, captured = _golden(GOLDEN / "delay_jitter.hex")
    assert args == ["delay", "20ms", "5ms"]
    req = req_netem(3, _netem(Emulation(delay_ms=20, jitter_ms=5)), replace=False, handle=0)
    assert _masked(_framed(req.body, req.msg_type, req.flags)) == _masked(captured)
    with_rate = _netem(Emulation(delay_ms=20, jitter_ms=5, rate_bps=10_000_000))
    assert with_rate.rate_Bps == 1_250_000  # netem shapes the rate itself: one root qdisc
