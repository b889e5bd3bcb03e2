"""The DNS server's IPv6 answers (#16), without sockets: AAAA for names and
aliases, PTR under ip6.arpa, clients on the IPv6 subnet, and the zones of
dual-stack and IPv6-only networks loaded from the state store."""

from __future__ import annotations

import ipaddress

import pytest
from dnslib import DNSRecord

from nsnet.dns import resolv_conf, server
from nsnet.model import Endpoint, Network
from nsnet.state import Store

CLIENT4, CLIENT6 = "10.9.0.5", "fd00:9::5"


def dual_zone() -> server.Zone:
    z = server.Zone("n", "10.9.0.1", ipaddress.IPv4Network("10.9.0.0/24"), ["198.51.100.2"],
                    gateway6="fd00:9::1", subnet6=ipaddress.IPv6Network("fd00:9::/64"))
    for name in ("web", "www"):
        z.names[name] = ["10.9.0.2", "fd00:9::2"]
    z.names["only6"] = ["fd00:9::3"]
    z.ptr.update({"10.9.0.2": "web", "fd00:9::2": "web", "fd00:9::3": "only6"})
    return z


def query(name: str, qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


def answers(zone: server.Zone, name: str, qtype: str, client: str = CLIENT4):
    ans = server.answer(zone, query(name, qtype), client, udp=True)
    assert ans.wire is not None, "expected an answer, not a forward"
    reply = DNSRecord.parse(ans.wire)
    return reply.header.rcode, sorted((str(rr.rtype), str(rr.rdata)) for rr in reply.rr)


def test_aaaa_for_names_and_aliases_a_stays_v4():
    z = dual_zone()
    assert answers(z, "web", "AAAA") == (0, [("28", "fd00:9::2")])
    assert answers(z, "www", "AAAA", CLIENT6) == (0, [("28", "fd00:9::2")])
    assert answers(z, "web", "A") == (0, [("1", "10.9.0.2")])
    assert answers(z, "web", "ANY") == (0, [("1", "10.9.0.2"), ("28", "fd00:9::2")])
    assert answers(z, "only6", "A") == (0, [])  # NODATA: the name exists
    assert answers(z, "nope", "AAAA")[0] == 3  # NXDOMAIN


def test_ptr_under_ip6_arpa():
    z = dual_zone()
    name = ipaddress.IPv6Address("fd00:9::2").reverse_pointer
    assert name.endswith(".ip6.arpa")
    assert answers(z, name, "PTR", CLIENT6) == (0, [("12", "web.")])
    unknown = ipaddress.IPv6Address("fd00:9::99").reverse_pointer
    assert answers(z, unknown, "PTR")[0] == 3  # in the subnet, nobody: NXDOMAIN
    assert answers(z, "2.0.9.10.in-addr.arpa", "PTR") == (0, [("12", "web.")])
    outside = ipaddress.IPv6Address("2001:db8::1").reverse_pointer
    assert server.answer(z, query(outside, "PTR"), CLIENT4, True).forward
    # a partial ip6.arpa name is a zone, not an address: forwarded
    assert server.answer(z, query("9.0.0.0.0.0.d.f.ip6.arpa", "PTR"), CLIENT4, True).forward


def test_clients_of_the_v6_subnet_are_served_others_refused():
    z = dual_zone()
    assert answers(z, "web", "AAAA", "fd00:9::42")[0] == 0
    for stranger in ("fd00:8::5", "2001:db8::5", "::1", "fe80::1%eth0", "bogus"):
        assert server.answer(z, query("web", "AAAA"), stranger, True).wire[3] & 0x0F == 5
    only4 = server.Zone("m", "10.8.0.1", ipaddress.IPv4Network("10.8.0.0/24"), [])
    assert not only4.allows("fd00:9::5") and only4.allows("10.8.0.7")
    only6 = server.Zone("o", "fd00:7::1", None, [], subnet6=ipaddress.IPv6Network(
        "fd00:7::/64"))
    assert only6.allows("fd00:7::9") and not only6.allows("10.8.0.7")
    assert only6.gateways == ("fd00:7::1",) and dual_zone().gateways == ("10.9.0.1",
                                                                        "fd00:9::1")


def test_fast_path_answers_aaaa_byte_for_byte_as_dnslib(monkeypatch):
    z = dual_zone()
    z.names["mixed"] = ["fd00:9::7", "10.9.0.7", "fd00:9::8", "10.9.0.8"]
    cases = [query(n, t) for n in ("web", "WWW", "only6", "mixed", "nope")
             for t in ("A", "AAAA", "ANY", "MX")]
    fast = {c: server.fast_answer(z, c) for c in cases}
    assert sum(w is not None for w in fast.values()) >= 12
    monkeypatch.setattr(server, "fast_answer", lambda *_: None)
    for data, wire in fast.items():
        if wire is not None:
            assert wire == bytes(server.answer(z, data, CLIENT4, True).wire), data.hex()


def _network(net_id, name, subnet, gateway, subnet6, gateway6, **kw):
    return Network(net_id, name, f"br{net_id}", subnet, gateway, subnet, 1500, 1.0,
                   subnet6=subnet6, gateway6=gateway6, ip_range6=subnet6, **kw)


def _endpoint(ep_id, net, netns, address, address6, aliases=()):
    return Endpoint(ep_id, net, netns, "eth0", f"v{ep_id}", address, "02:00:00:00:00:01", "",
                    True, 1.0, aliases, address6=address6)


@pytest.fixture
def store(tmp_path):
    st = Store(str(tmp_path))
    with st.transaction():
        st.add_network(_network("d", "dual", "10.9.0.0/24", "10.9.0.1", "fd00:9::/64",
                                "fd00:9::1"))
        st.add_network(_network("s", "six", "", "", "fd00:6::/64", "fd00:6::1"))
        st.add_network(_network("f", "four", "10.4.0.0/24", "10.4.0.1", "", ""))
        st.add_endpoints("d", [_endpoint("a", "dual", "web", "10.9.0.2/24", "fd00:9::2/64",
                                         ("www",))])
        st.add_endpoints("s", [_endpoint("b", "six", "db", "", "fd00:6::2/64")])
        st.add_endpoints("f", [_endpoint("c", "four", "old", "10.4.0.2/24", "")])
    yield st
    st.close()


def test_zones_of_dual_stack_and_ipv6_only_networks(store):
    zones = server.load_zones(store.db, ["203.0.113.53", "fd00:9::1", "2001:db8::53"])
    assert sorted(zones) == ["10.4.0.1", "10.9.0.1", "fd00:6::1", "fd00:9::1"]
    dual = zones["10.9.0.1"]
    assert zones["fd00:9::1"] is dual  # one zone, served on both gateways
    assert dual.names == {"web": ["10.9.0.2", "fd00:9::2"], "www": ["10.9.0.2", "fd00:9::2"]}
    assert dual.ptr == {"10.9.0.2": "web", "fd00:9::2": "web"}
    assert dual.upstreams == ["203.0.113.53", "2001:db8::53"]  # never another gateway
    six = zones["fd00:6::1"]
    assert (six.gateway, six.gateway6, six.subnet) == ("fd00:6::1", "", None)
    assert six.names == {"db": ["fd00:6::2"]} and six.allows("fd00:6::9")
    four = zones["10.4.0.1"]
    assert four.names == {"old": ["10.4.0.2"]} and four.subnet6 is None


def test_resolv_conf_names_the_gateways_of_the_network():
    dual = _network("d", "dual", "10.9.0.0/24", "10.9.0.1", "fd00:9::/64", "fd00:9::1")
    six = _network("s", "six", "", "", "fd00:6::/64", "fd00:6::1")
    four = _network("f", "four", "10.4.0.0/24", "10.4.0.1", "", "")
    assert "nameserver 10.4.0.1\noptions" in resolv_conf(four)  # unchanged
    assert "nameserver fd00:6::1\n" in resolv_conf(six) and "10." not in resolv_conf(six)
    assert "nameserver 10.9.0.1\nnameserver fd00:9::1\n" in resolv_conf(dual)
