"""The IPv6 firewall rules as data (#16): golden JSON for dual-stack and
IPv6-only networks, and what the rules promise, read off the commands.
The IPv4 golden file (test_firewall_rules.py) must not change with them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fw6data import _net, _pub, _v4only
from nsnet import FakeFirewall, parse_ports
from nsnet.firewall import facts_of_commands
from nsnet.firewall import rules as fw
from nsnet.model import Published

GOLDEN = Path(__file__).parent / "golden" / "firewall6.json"


def _transactions() -> dict[str, list]:
    dual = _net(1)
    only6 = _net(2, v4=False, icc=False)
    routed = _net(3, ipv6_mode="routed")
    internal = _net(4, v4=False, internal=True)
    plain = _v4only(5)
    nat_pubs = (_pub(dual, "8080:80") + _pub(dual, "[2001:db8::1]:5353:53/udp", 1)
                + _pub(dual, "198.51.100.1:8443:443") + _pub(dual, "[::]:9090:90"))
    return {
        "create dual-stack": fw.skeleton(ipv6=True) + fw.network_add(dual, [plain]),
        "create IPv6-only (no-icc)": fw.skeleton(ipv6=True) + fw.network_add(only6, [dual]),
        "create routed": fw.skeleton(ipv6=True) + fw.network_add(routed, [dual, only6]),
        "create IPv6-only internal": fw.skeleton(ipv6=True) + fw.network_add(internal, [dual]),
        "publish on dual-stack": fw.skeleton(ipv6=True) + fw.ports_add(nat_pubs),
        "publish on routed": fw.skeleton(ipv6=True) + fw.ports_add(_pub(routed, "8080:80")),
        "unpublish on dual-stack": fw.skeleton(ipv6=True) + fw.ports_remove(nat_pubs),
        "remove IPv6-only": fw.skeleton(ipv6=True) + fw.network_remove(only6, [dual, plain]),
        "remove the last IPv6 network": fw.skeleton(ipv6=True) + fw.network_remove(dual,
                                                                                  [plain]),
    }


def test_transactions_match_golden_json() -> None:
    got = _transactions()
    if os.environ.get("NSNET_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text()), "rules changed: NSNET_REGEN_GOLDEN=1 to accept"


def _cmds_of(cmds: list, family: str) -> list:
    return [c for c in cmds if next(iter(next(iter(c.values())).values())).get("family")
            == family]


def test_ipv4_only_networks_never_touch_the_ip6_table() -> None:
    a, b = _v4only(5), _v4only(6, internal=True)
    pubs = [Published(e.id, a.name, e.netns, e.ip, m) for e in a.endpoints[:1]
            for m in parse_ports(["8080:80"])]
    for cmds in (fw.skeleton(), fw.network_add(a, []), fw.network_add(b, [a]),
                 fw.network_remove(b, [a]), fw.ports_add(pubs), fw.ports_remove(pubs)):
        assert _cmds_of(cmds, "ip6") == []


def test_ipv6_only_network_is_only_an_ipv4_drop_in_the_ip_table() -> None:
    """Its ports never touch the ip table; the network itself only puts its
    bridge in in_from/fwd_in/fwd_out with a plain drop (IPv4 an endpoint
    gives itself goes nowhere), and takes it out again."""
    only6 = _net(2, v4=False)
    assert _cmds_of(fw.ports_add(_pub(only6, "8080:80")), "ip") == []
    for cmds in (fw.network_add(only6, []), fw.network_remove(only6, [])):
        ip = _cmds_of(cmds, "ip")
        assert ip and all("element" in next(iter(c.values())) for c in ip)
        assert {next(iter(c.values()))["element"]["name"] for c in ip} == {
            "in_from", "fwd_in", "fwd_out"}
        assert all(e[1] == {"drop": None} for c in ip
                   for e in next(iter(c.values()))["element"]["elem"])
        assert _cmds_of(cmds, "ip6")


def test_every_rule_and_element_names_its_owner() -> None:
    for cmds in _transactions().values():
        for cmd in cmds:
            (_op, body), = cmd.items()
            obj = next(iter(body.values()))
            if "rule" in body:
                assert obj["comment"].startswith("nsnet")
            if "element" in body:
                for e in obj["elem"]:
                    assert (e[0] if isinstance(e, list) else e)["elem"]["comment"].startswith(
                        "nsnet:")


def _rules(cmds: list, chain: str, family: str = "ip6") -> list[list]:
    return [c["add"]["rule"]["expr"] for c in cmds if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain and c["add"]["rule"]["family"] == family]


def _elems(cmds: list, name: str, family: str = "ip6") -> list:
    return [e for c in cmds if "element" in c.get("add", {})
            and c["add"]["element"]["name"] == name and c["add"]["element"]["family"] == family
            for e in c["add"]["element"]["elem"]]


def test_dual_stack_publish_serves_both_families_as_docker() -> None:
    """``-p 8080:80`` serves both families; an IPv4 host address only IPv4;
    ``[::]`` and a v6 host address only IPv6."""
    dual = _net(1)
    cmds = fw.ports_add(_pub(dual, "8080:80"))
    assert _elems(cmds, "ports_any_addr", "ip")[0][1] == "10.1.0.2"
    assert _elems(cmds, "ports_any_addr", "ip6")[0][1] == "fd00:1::2"
    v4 = fw.ports_add(_pub(dual, "198.51.100.1:8080:80"))
    assert _elems(v4, "ports_ip_addr", "ip") and not _cmds_of(v4, "ip6")
    for spec in ("[::]:8080:80", "[2001:db8::1]:8080:80"):
        v6 = fw.ports_add(_pub(dual, spec))
        assert _cmds_of(v6, "ip6") and not _cmds_of(v6, "ip")
    specific = fw.ports_add(_pub(dual, "[2001:db8::1]:8080:80"))
    (key, addr), = _elems(specific, "ports_ip_addr")
    assert key["elem"]["val"] == {"concat": ["2001:db8::1", "tcp", 8080]} and addr == "fd00:1::2"


def test_routed_mode_opens_the_container_port_without_nat() -> None:
    routed = _net(3, ipv6_mode="routed")
    cmds = fw.network_add(routed, [])
    assert _rules(cmds, "masq") == []  # no masquerade for the routed network
    assert _elems(cmds, "routed") == [{"elem": {"val": "br3", "comment": fw.bridge_alias(
        routed.id)}}]
    # the IPv4 side of the same network stays NAT (Docker's modes are per family)
    assert _rules(cmds, "masq", "ip")
    pubs = fw.ports_add(_pub(routed, "8080:80"))
    routed_ports = _elems(pubs, "routed_ports")
    assert [e["elem"]["val"] for e in routed_ports] == [{"concat": ["fd00:3::2", "tcp", 80]}]
    assert not _elems(pubs, "ports_any_addr")  # no DNAT on the IPv6 side
    assert _elems(pubs, "ports_any_addr", "ip")  # the IPv4 side still maps 8080 -> 80


def test_nat_mode_masquerades_and_drops_unsolicited_inbound() -> None:
    dual = _net(1)
    cmds = fw.network_add(dual, [])
    masq, = _rules(cmds, "masq")
    assert masq[0]["match"]["right"] == {"prefix": {"addr": "fd00:1::", "len": 64}}
    (verdict,) = [e[1] for e in _elems(cmds, "fwd_out")]
    assert verdict == {"drop": None}  # into the bridge: only replies, DNAT, routed ports


def test_anti_spoofing_and_isolation_in_the_from_chain() -> None:
    dual = _net(1)
    first, own, isolation = _rules(fw.network_add(dual, []), "from-01aaaaaaaaaaaaaa")[:3]
    assert first == [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip6",
                                                                "field": "saddr"}},
                                "right": {"prefix": {"addr": "fd00:1::", "len": 64}}}},
                     {"drop": None}]
    assert own[-1] == {"accept": None} and isolation[-1] == {"drop": None}


def test_internal_v6_network_allows_neighbour_discovery_dns_and_ping_only() -> None:
    internal = _net(4, v4=False, internal=True)
    rules = _rules(fw.network_add(internal, []), "internal-04aaaaaaaaaaaaaa")
    assert rules[1][0]["match"]["right"] == {"set": ["nd-neighbor-solicit",
                                                     "nd-neighbor-advert"]}
    assert rules[1][1]["match"]["right"] == 255  # from the link only
    assert rules[-1] == [{"drop": None}]
    assert not _rules(fw.network_add(internal, []), "masq")


def test_the_last_ipv6_network_removes_the_ip6_table() -> None:
    dual, only6 = _net(1), _net(2, v4=False)
    assert fw.teardown6()[-1] in fw.network_remove(dual, [_v4only(5)])
    assert fw.teardown6()[-1] not in fw.network_remove(dual, [only6])


def test_full_rebuild_equals_incremental_with_ipv6() -> None:
    fake = FakeFirewall()
    dual, only6, routed = _net(1), _net(2, v4=False, icc=False), _net(3, ipv6_mode="routed")
    plain = _v4only(5)
    pubs = _pub(dual, "8080-8081:80-81") + _pub(routed, "9000:90")
    fake.apply(fw.skeleton() + fw.network_add(plain, []))
    fake.apply(fw.skeleton(ipv6=True) + fw.network_add(dual, [plain]))
    fake.apply(fw.skeleton(ipv6=True) + fw.network_add(only6, [plain, dual]))
    fake.apply(fw.skeleton(ipv6=True) + fw.network_add(routed, [plain, dual, only6]))
    fake.apply(fw.skeleton(ipv6=True) + fw.ports_add(pubs))
    assert fake.facts() == facts_of_commands(fw.full([plain, dual, only6, routed], pubs))
    fake.apply(fw.skeleton(ipv6=True) + fw.ports_remove(pubs))
    for gone, left in ((routed, [plain, dual, only6]), (only6, [plain, dual]),
                       (dual, [plain])):
        fake.apply(fw.skeleton(ipv6=True) + fw.network_remove(gone, left))
        assert fake.facts() == facts_of_commands(fw.full(left, []))
    assert not [f for f in fake.facts() if f[1] == "ip6"]  # the ip6 table went with the last
