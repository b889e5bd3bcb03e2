"""The DNS server's answering and configuration logic, without sockets."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from nsnet import dns
from nsnet.dns import server


def zone(internal: bool = False) -> server.Zone:
    z = server.Zone("n", "10.9.0.1", ipaddress.ip_network("10.9.0.0/24"), ["198.51.100.2"],
                    internal)
    z.names["web"] = ["10.9.0.2"]
    z.ptr["10.9.0.2"] = "web"
    return z


def query(labels: list[bytes], qtype: int = 1, qid: int = 7) -> bytes:
    out = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in labels:
        out += bytes([len(label)]) + label
    return out + b"\0" + struct.pack("!HH", qtype, 1)


def rcode(wire: bytes | None) -> int:
    assert wire is not None
    return wire[3] & 0x0F


def test_the_server_knows_nsnets_own_resolv_conf_mark() -> None:
    assert server.RESOLV_MARK == dns.RESOLV_MARK


def test_host_upstreams_first_existing_file_not_written_by_nsnet(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_text(dns.RESOLV_MARK + " x\nnameserver 10.9.0.1\n")
    theirs.write_text("search example\nnameserver 203.0.113.53\nnameserver 2001:db8::1\n")
    # IPv6 upstreams too (#16), after the IPv4 ones
    theirs.write_text("nameserver 2001:db8::1\nsearch example\nnameserver 203.0.113.53\n")
    assert server.host_upstreams([str(tmp_path / "missing"), str(ours), str(theirs)]) == [
        "203.0.113.53", "2001:db8::1"]
    assert server.host_upstreams([str(tmp_path / "missing")]) == []


def test_host_resolv_confs_follow_ip_netns_exec() -> None:
    assert dns.host_resolv_confs(None, "/etc/netns") == ["/etc/resolv.conf"]
    assert dns.host_resolv_confs("/run/netns/edge", "/etc/netns") == [
        "/etc/netns/edge/resolv.conf", "/etc/resolv.conf"]
    assert dns.server_argv("/var/lib/nsnet", ["/etc/resolv.conf"])[1:3] == ["-I", "-m"]


def test_internal_zone_never_forwards() -> None:
    for internal, forwards in ((False, True), (True, False)):
        ans = server.answer(zone(internal), query([b"example", b"com"]), "10.9.0.5", udp=True)
        assert ans.forward is forwards
        if internal:
            assert rcode(ans.wire) == 2 and ans.cache_key is None  # SERVFAIL, not cached
    assert rcode(server.answer(zone(True), query([b"web"]), "10.9.0.5", True).wire) == 0


def test_names_past_rfc1035_limits_get_formerr() -> None:
    for labels in ([b"x" * 64], [b"x" * 64, b"in-addr", b"arpa"], [b"a" * 63] * 5):
        for qtype in (1, 12):
            ans = server.answer(zone(), query(labels, qtype), "10.9.0.5", udp=True)
            assert rcode(ans.wire) == 1 and ans.wire[:2] == b"\0\x07"
    ok = server.answer(zone(), query([b"x" * 63]), "10.9.0.5", udp=True)
    assert rcode(ok.wire) == 3  # NXDOMAIN: a single label of 63 bytes is fine


def test_labels_with_dots_or_odd_bytes_are_never_our_names() -> None:
    assert rcode(server.answer(zone(), query([b"we.b"]), "10.9.0.5", True).wire) == 3
    assert rcode(server.answer(zone(), query([b"WEB"]), "10.9.0.5", True).wire) == 0
    assert server.answer(zone(), query([b"web", b"x.y"]), "10.9.0.5", True).forward


def test_fast_path_answers_byte_for_byte_as_dnslib(monkeypatch) -> None:
    """Every query the dnslib-free path answers gets exactly the bytes the
    full path would send; what it does not know it leaves to the full path."""
    z = zone()
    z.names.update({"pool": ["10.9.0.3", "10.9.0.4"], "a.b": ["10.9.0.5"],
                    "big": [f"10.9.0.{i}" for i in range(1, 60)]})
    cases = []
    for labels in ([b"web"], [b"WeB"], [b"pool"], [b"a", b"b"], [b"big"], [b"nope"],
                   [b"a.b"], [b"\xff"], [b"x" * 64]):
        for qtype in (1, 28, 255, 15, 12):
            for flags in (0x0100, 0x0000, 0x0110, 0x0130, 0x8100, 0x2900):
                cases.append(bytearray(query(labels, qtype)))
                cases[-1][2:4] = flags.to_bytes(2, "big")
    fast = {bytes(c): server.fast_answer(z, bytes(c)) for c in cases}
    assert sum(w is not None for w in fast.values()) >= 60
    monkeypatch.setattr(server, "fast_answer", lambda *_: None)
    for data, wire in fast.items():
        if wire is not None:
            assert wire == bytes(server.answer(z, data, "10.9.0.5", True).wire), data.hex()
    for data in (query([b"web"])[:-1], query([b"web"]) + b"x", query([b"web"], qtype=1)[:-2]
                 + b"\x00\x03"):  # truncated, trailing byte, class CHAOS
        assert server.fast_answer(z, data) is None
