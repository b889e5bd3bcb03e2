"""Networks' link groups (#15) and a recreated namespace's birth values
(#16): the pure parts, without root."""

from __future__ import annotations

import itertools

import pytest

from nsnet.engine.context import IPV6_DEFAULT_OFF, transient_group
from nsnet.engine.endpoints import born_with, reborn_with
from nsnet.engine.intents import DeleteIntent, NetworkRef, decode, encode
from nsnet.engine.networks import LINK_GROUPS, pick_link_group
from nsnet.kernel import netlink as nl
from nsnet.kernel import rtnl as r
from nsnet.model import Network
from nsnet.state import Store


def _net(name: str, subnet: str = "10.1.0.0/24", subnet6: str = "") -> Network:
    return Network("id-" + name, name, "br-" + name, subnet, subnet.rsplit(".", 1)[0] + ".1",
                   subnet, 1500, 0.0, subnet6=subnet6,
                   gateway6=subnet6.replace("::/64", "::1") if subnet6 else "",
                   ip_range6=subnet6)


def test_a_link_group_is_one_ip_can_name_and_apart_from_transient_ones():
    low, high = LINK_GROUPS
    assert 0 < low < high <= 1 << 31  # ip's groups are 0..INT_MAX
    for _ in range(200):
        assert low <= pick_link_group(set()) < high
        assert not low <= transient_group() < high


def test_a_link_group_is_none_of_the_taken_ones():
    draws = itertools.chain([5 << 26, 5 << 26, 6 << 26], itertools.repeat(7 << 26))
    assert pick_link_group({5 << 26}, lambda _lo, _hi: next(draws)) == 6 << 26


def test_the_host_end_is_born_in_the_group_and_the_peer_is_not():
    req = r.req_new_veth(r.VethSpec("h0", "p0", 4, group=600_000_000))
    host = nl.parse_attrs(req.body, nl.IFINFO.size)
    assert nl.u32(host[nl.IFLA_GROUP]) == 600_000_000
    info = nl.parse_attrs(host[nl.IFLA_LINKINFO])
    peer = nl.parse_attrs(nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER],
                          nl.IFINFO.size)
    assert nl.IFLA_GROUP not in peer
    plain = nl.parse_attrs(r.req_new_veth(r.VethSpec("h0", "p0", 4)).body, nl.IFINFO.size)
    assert nl.IFLA_GROUP not in plain  # no group: the request is as before


def test_the_delete_intent_carries_the_group_and_older_journals_read_as_none():
    intent = DeleteIntent(("e1",), (), NetworkRef("n1", "br-n1", "bridge", 600_000_000))
    assert decode(*encode(intent)) == intent
    older = {"endpoints": ["e1"], "namespaces": [],
             "network": {"id": "n1", "bridge": "br-n1", "driver": "bridge"}}
    assert decode("delete", older).network == NetworkRef("n1", "br-n1")
    assert decode("delete", {"network": ["n1", "br-n1"]}).network.link_group == 0


def test_the_group_is_recorded_with_the_network(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(Network("id1", "a", "br-a", "10.1.0.0/24", "10.1.0.1", "10.1.0.0/24",
                                  1500, 0.0, link_group=600_000_001))
        store.add_network(_net("b", "10.2.0.0/24"))  # made before groups: none
    assert store.network("a").link_group == 600_000_001
    assert store.link_groups() == {600_000_001}


@pytest.mark.parametrize("nets, want", [
    ([], {IPV6_DEFAULT_OFF: "1"}),
    (["v4"], {IPV6_DEFAULT_OFF: "1"}),
    (["v6"], "quiet"),
    (["v4", "v6"], "quiet"),  # its IPv4-only interface gets IPv6 off per interface
])
def test_a_recreated_namespace_is_born_as_connect_create_births_it(nets, want):
    by_name = {"v4": _net("v4"), "v6": _net("v6", "10.6.0.0/24", "fd00:6::/64")}
    got = reborn_with(by_name[n] for n in nets)
    assert got == (born_with(by_name["v6"]) if want == "quiet" else want)
    if want == "quiet":
        assert got["net/ipv6/conf/default/disable_ipv6"] == "0"
        assert got["net/ipv6/conf/default/accept_dad"] == "0"
