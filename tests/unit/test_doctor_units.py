"""Pure parts of ``nsnet doctor``: target syntax and nft trace parsing."""

from __future__ import annotations

import pytest

from nsnet import InvalidInput
from nsnet.doctor.path import parse_target
from nsnet.doctor.trace import TABLE, _parse, _tables


def test_target_syntax():
    assert parse_target("b") == ("b", None, "icmp")
    assert parse_target("b:80") == ("b", 80, "tcp")
    assert parse_target("10.0.0.3:53/udp") == ("10.0.0.3", 53, "udp")
    assert parse_target("[2001:db8::1]:443") == ("2001:db8::1", 443, "tcp")
    assert parse_target("2001:db8::1") == ("2001:db8::1", None, "icmp")
    for bad in ("b:0", "b:65536", "b:http", "b:80/sctp"):
        with pytest.raises(InvalidInput):
            parse_target(bad)


def test_trace_lines_become_verdicts():
    out = "\n".join([
        f"trace id 1a ip {TABLE} pre rule ip saddr 10.0.0.2 meta nftrace set 1 (verdict continue)",
        "trace id 1a inet foreign block packet: iif \"br-1\" ip saddr 10.0.0.2",
        "trace id 1a inet foreign block rule ip daddr 198.51.100.2 counter packets 0 bytes 0 "
        "drop (verdict drop)",
        "trace id 1b ip nsnet forward policy drop ",
        "trace id 1c ip nsnet forward rule ct state established accept (verdict accept)",
    ])
    got = _parse("host", out)
    assert [(v.table, v.chain, v.verdict) for v in got] == [
        ("foreign", "block", "drop"), ("nsnet", "forward", "drop"), ("nsnet", "forward", "accept")]
    assert got[0].rule == "ip daddr 198.51.100.2 counter packets 0 bytes 0 drop"
    assert got[1].rule == "" and got[1].is_drop and not got[2].is_drop


def test_trace_tables_mark_only_the_probe_pairs():
    text = _tables([("10.0.0.2", "10.0.0.3")], bridge=True)
    assert text.count("ip saddr 10.0.0.2 ip daddr 10.0.0.3 meta nftrace set 1") == 3
    assert f"table bridge {TABLE}" in text and "priority -500" in text


def test_trace_tables_mark_ipv6_pairs_in_the_inet_table():
    text = _tables([("fd00::2", "fd00::3"), ("10.0.0.2", "fd00::3")], bridge=False)
    assert text.startswith(f"table inet {TABLE}")
    assert text.count("ip6 saddr fd00::2 ip6 daddr fd00::3 meta nftrace set 1") == 2
    assert "10.0.0.2" not in text  # a pair of two families matches no packet: left out
