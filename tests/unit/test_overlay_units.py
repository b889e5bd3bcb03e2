"""The overlay driver's decisions that need no kernel (#17): names, MACs,
the driver field, intents across versions, address assignment from the
host's blocks over the in-memory store (no duplicates across hosts, one
store round trip per block, not per endpoint)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from nsnet.cluster import alloc, membership
from nsnet.cluster.store import MemoryStore
from nsnet.engine.intents import NetworkCreateIntent, NetworkRef, decode, encode
from nsnet.engine.networks import plan_network
from nsnet.engine.overlay import OverlayDriver, overlay_mac, vxlan_name
from nsnet.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from nsnet.model import Endpoint, NetworkSpec


def test_vxlan_names_fit_an_interface_name_and_macs_follow_addresses():
    assert len(vxlan_name("f" * 32)) == 15 and vxlan_name("0123456789abcdef") == "vx-0123456789ab"
    assert overlay_mac("10.200.0.66") == "02:42:0a:c8:00:42"
    # distinct addresses, distinct MACs (what keeps one FDB entry per MAC)
    macs = {overlay_mac(str(ip)) for ip in ipaddress.ip_network("10.200.0.0/22")}
    assert len(macs) == 1024


def test_the_driver_is_planned_and_checked():
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay"))
    assert net.driver == "overlay"
    assert plan_network(NetworkSpec("br", "10.9.0.0/24")).driver == "bridge"
    with pytest.raises(InvalidInput, match="--driver"):
        plan_network(NetworkSpec("x", "10.9.0.0/24", driver="macvlan"))


def test_intents_of_older_journals_mean_the_bridge_driver():
    old = decode("network_create", {"id": "n1", "bridge": "br-n1", "forwarding_was_off": True})
    assert old == NetworkCreateIntent("n1", "br-n1", True, False, "bridge")
    new = NetworkCreateIntent("n2", "br-n2", False, False, "overlay", "ov")
    assert decode(*encode(new)) == new
    ref = decode("delete", {"endpoints": [], "namespaces": [], "network": ["n3", "br-n3"]})
    assert ref.network == NetworkRef("n3", "br-n3", "bridge")


class _LocalStore:
    """The host's SQLite store, as much of it as ``assign`` reads."""

    def __init__(self, used: set[str]) -> None:
        self.used, self.state_dir = used, "/nonexistent"

    def used_addresses(self, net_id: str) -> set[str]:
        return self.used


def _driver(store: MemoryStore, host: str, used: set[str]) -> OverlayDriver:
    ctx = SimpleNamespace(store=_LocalStore(used), host_netns=None, netns_dir="/run/netns")
    driver = OverlayDriver(ctx, bridge=None, fact=None)  # type: ignore[arg-type]
    driver.cluster._config = membership.ClusterConfig("etcd://x:2379", host, "198.51.100.1")
    driver.cluster._store = store
    return driver


def _eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"e{i}", "ov", f"ns{i}", "eth0", f"v{i}", "10.200.0.9/16",
                     "02:00:00:00:00:01", "10.200.0.1", True, 0.0) for i in range(n)]


def test_assign_takes_addresses_from_the_hosts_blocks_without_duplicates():
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay"))
    a = _driver(store, "h1", set()).assign(net, _eps(70), None, None)
    b = _driver(store, "h2", set()).assign(net, _eps(5), None, None)
    ips = [e.ip for e in a + b]
    assert len(set(ips)) == 75
    assert "10.200.0.0" not in ips and "10.200.0.1" not in ips  # network, gateway
    blocks = {str(ipaddress.ip_network(f"{ip}/26", strict=False)) for ip in ips}
    assert blocks == {"10.200.0.0/26", "10.200.0.64/26", "10.200.0.128/26"}  # h1 2, h2 1
    assert all(e.mac == overlay_mac(e.ip) and e.address.endswith("/16") for e in a + b)


def test_assign_skips_addresses_in_use_and_pays_store_trips_per_block_not_endpoint():
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay"))
    driver = _driver(store, "h1", {"10.200.0.2", "10.200.0.3"})
    calls = []
    for name in ("get", "get_prefix", "txn", "put"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _r=real, _n=name, **kw: calls.append(_n) or _r(*a, **kw))
    eps = driver.assign(net, _eps(300), None, None)
    assert "10.200.0.2" not in {e.ip for e in eps} and len({e.ip for e in eps}) == 300
    claims = calls.count("txn")
    assert claims == 5  # 300 addresses (+2 used, +2 reserved) in five /26 blocks
    assert len(calls) <= 3 + 2 * claims  # not one round trip per endpoint


def test_a_static_mac_is_refused_on_an_overlay():
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay"))
    with pytest.raises(InvalidInput, match="--mac"):
        _driver(store, "h1", set()).assign(net, _eps(1), None, "02:00:00:00:00:07")


def test_a_static_address_claims_its_block_or_is_refused_naming_the_holder():
    """connect --ip on an overlay (lead's #17 follow-up, replacing the old
    refusal): the address's block is claimed by transaction if free; one of
    another host's blocks is refused naming that host; reserved addresses
    and ones in use are refused too."""
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay"))
    (ep,) = _driver(store, "h1", set()).assign(net, _eps(1), "10.200.7.9", None)
    assert ep.ip == "10.200.7.9" and ep.mac == overlay_mac("10.200.7.9")
    on = alloc.get_network(store, "ov")
    assert [str(b) for b in alloc.host_blocks(store, on, "h1")] == ["10.200.7.0/26"]
    with pytest.raises(Conflict, match="'h1'"):  # h1's block, from h2
        _driver(store, "h2", set()).assign(net, _eps(1), "10.200.7.10", None)
    with pytest.raises(AlreadyExists):  # in use on h1
        _driver(store, "h1", {"10.200.7.9"}).assign(net, _eps(1), "10.200.7.9", None)
    for reserved in ("10.200.0.0", "10.200.0.1", "10.200.255.255", "10.201.0.5"):
        with pytest.raises(InvalidInput):
            _driver(store, "h2", set()).assign(net, _eps(1), reserved, None)
    # h1's other addresses still come from its blocks, the static one skipped
    eps = _driver(store, "h1", {"10.200.7.9"}).assign(net, _eps(3), None, None)
    assert "10.200.7.9" not in {e.ip for e in eps}


def test_a_crashed_creates_rollback_removes_only_the_network_it_made():
    """delete_network(creator=...): the record names the local network whose
    create made it; another host's create (or an older record) is left."""
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16", creator="net-of-h1")
    assert not alloc.delete_network(store, "ov", creator="net-of-h2")  # joined, not made
    assert alloc.get_network(store, "ov").creator == "net-of-h1"
    assert alloc.delete_network(store, "ov", creator="net-of-h1")
    keys, _ = store.get_prefix("/nsnet/v1/")
    assert [kv.key for kv in keys] == ["/nsnet/v1/vni-next"]  # name and VNI both gone


def test_a_host_leaving_a_network_in_use_gives_its_blocks_back():
    store = MemoryStore()
    on = alloc.create_network(store, "ov", "10.200.0.0/16")
    for host in ("h1", "h1", "h2"):
        alloc.claim_block(store, on, host)
    assert alloc.release_host_blocks(store, "ov", "h1") == 2
    assert alloc.host_blocks(store, on, "h1") == []
    assert [str(b) for b in alloc.host_blocks(store, on, "h2")] == ["10.200.0.128/26"]
    blocks, _ = store.get_prefix("/nsnet/v1/blocks/ov/")
    assert [kv.json()["host"] for kv in blocks] == ["h2"]


# ------------------------------------------------------------- IPv6 (#16)
def test_ipv6_macs_are_the_low_32_bits_and_distinct_in_a_96():
    assert overlay_mac("fd00:10:210::a:c8:0:42") == "02:42:00:00:00:42"
    assert overlay_mac("fd00::0a00:0102") == overlay_mac("10.0.1.2")  # same rule, 4 bytes
    span = ipaddress.ip_network("fd00:1::/96")
    sample = [span[i * 7919] for i in range(2000)]  # across many /120 blocks
    assert len({overlay_mac(str(ip)) for ip in sample}) == 2000


def _eps6(n: int) -> list[Endpoint]:
    return [Endpoint(f"e{i}", "ov", f"ns{i}", "eth0", f"v{i}", "", "02:00:00:00:00:01", "",
                     True, 0.0, address6="fd00:1::9/64", gateway6="fd00:1::1")
            for i in range(n)]


def test_dual_stack_assign_takes_both_families_from_the_hosts_blocks():
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16", subnet6="fd00:1::/64")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", subnet6="fd00:1::/64",
                                   driver="overlay"))
    a = _driver(store, "h1", set()).assign(net, _eps(300), None, None)
    b = _driver(store, "h2", set()).assign(net, _eps(3), None, None)
    ips6 = [ipaddress.ip_address(e.ip6) for e in a + b]
    assert len(set(ips6)) == 303 and len({e.ip for e in a + b}) == 303
    assert ipaddress.ip_address("fd00:1::") not in ips6  # subnet-router anycast
    assert ipaddress.ip_address("fd00:1::1") not in ips6  # the gateway
    assert all(ip in ipaddress.ip_network("fd00:1::/96") for ip in ips6)
    blocks6 = {str(ipaddress.ip_network(f"{ip}/120", strict=False)) for ip in ips6}
    assert blocks6 == {"fd00:1::/120", "fd00:1::100/120", "fd00:1::200/120"}  # h1 2, h2 1
    assert all(e.mac == overlay_mac(e.ip) and e.address6.endswith("/64") for e in a + b)
    on = alloc.get_network(store, "ov")
    assert [str(x) for x in alloc.host_blocks(store, on, "h2")] == ["10.200.1.64/26",
                                                                     "fd00:1::200/120"]


def test_ipv6_only_assign_makes_macs_of_the_v6_address():
    store = MemoryStore()
    alloc.create_network(store, "ov", None, subnet6="fd00:1::/64")
    net = plan_network(NetworkSpec("ov", None, ipv4=False, subnet6="fd00:1::/64",
                                   driver="overlay"))
    eps = _driver(store, "h1", set()).assign(net, _eps6(3), None, None)
    assert [e.ip6 for e in eps] == ["fd00:1::2", "fd00:1::3", "fd00:1::4"]
    assert all(e.address == "" and e.mac == overlay_mac(e.ip6) for e in eps)


def test_a_static_ipv6_address_claims_its_block_or_is_refused():
    store = MemoryStore()
    alloc.create_network(store, "ov", "10.200.0.0/16", subnet6="fd00:1::/64")
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", subnet6="fd00:1::/64",
                                   driver="overlay"))
    (ep,) = _driver(store, "h1", set()).assign(net, _eps(1), None, None, "fd00:1::7:9")
    assert ep.ip6 == "fd00:1::7:9"
    on = alloc.get_network(store, "ov")
    assert "fd00:1::7:0/120" in {str(b) for b in alloc.host_blocks(store, on, "h1")}
    with pytest.raises(Conflict, match="'h1'"):
        _driver(store, "h2", set()).assign(net, _eps(1), None, None, "fd00:1::7:a")
    with pytest.raises(AlreadyExists, match="--ip6"):
        _driver(store, "h1", {"fd00:1::7:9"}).assign(net, _eps(1), None, None, "fd00:1::7:9")
    for bad in ("fd00:1::", "fd00:1::1", "fd00:1::1:0:0:5", "fd00:2::5"):  # /96 only
        with pytest.raises(InvalidInput):
            _driver(store, "h2", set()).assign(net, _eps(1), None, None, bad)


def test_prepare_refuses_what_overlays_cannot_keep():
    """A gateway other than the subnet's first address (every host's bridge
    holds the gateway, and the cluster keeps only that one out of the
    blocks), an IPv6 --ip-range, and routed IPv6 are refused before the
    kernel is asked anything."""
    driver = _driver(MemoryStore(), "h1", set())
    for spec, why in (
            (NetworkSpec("ov", "10.200.0.0/16", gateway="10.200.0.254", driver="overlay"),
             "--gateway"),
            (NetworkSpec("ov", "10.200.0.0/16", subnet6="fd00:1::/64",
                         gateway6="fd00:1::fe", driver="overlay"), "--gateway"),
            (NetworkSpec("ov", None, ipv4=False, subnet6="fd00:1::/64",
                         ip_range6="fd00:1::/80", driver="overlay"), "--ip-range"),
            (NetworkSpec("ov", "10.200.0.0/16", subnet6="fd00:1::/64", ipv6_mode="routed",
                         driver="overlay"), "--ipv6-mode")):
        with pytest.raises(InvalidInput, match=why):
            driver.prepare(plan_network(spec))


def _setup_race(store: MemoryStore, mine6: str, seen_missing: bool):
    """h2 creates overlay "ov" --ipv6 after h1 made it with fd00:1::/64;
    ``seen_missing``: h2's own lookup ran before h1's record landed (so h2
    loses the race inside create_network)."""
    alloc.create_network(store, "ov", "10.200.0.0/16", creator="net-of-h1",
                         subnet6="fd00:1::/64")
    driver = _driver(store, "h2", set())
    made = []
    driver.bridge = SimpleNamespace(setup=lambda net: made.append("bridge"))
    driver._make_vxlan = lambda net, vni: made.append(("vxlan", vni))  # type: ignore[method-assign]
    if seen_missing:
        real = driver.cluster_network
        calls = iter([True])

        def late(name):
            if next(calls, False):
                raise NotFound("not yet")
            return real(name)
        driver.cluster_network = late  # type: ignore[method-assign]
    net = plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay", ipv6=True,
                                   subnet6=mine6))
    return driver, net, made


@pytest.mark.parametrize("seen_missing", [False, True])
def test_setup_joins_a_network_made_meanwhile_only_with_the_same_subnets(seen_missing):
    """The same `network create --driver overlay --ipv6` on two hosts at once:
    each picked a /64 of its own ULA pool; the host that did not make the
    cluster's network is refused (its intent rolls back), not joined with a
    v6 subnet other than the cluster's -- and joins when the subnets agree."""
    driver, net, made = _setup_race(MemoryStore(), "fd00:2::/64", seen_missing)
    with pytest.raises(AlreadyExists, match="fd00:1::/64"):
        driver.setup(net)
    assert made == []
    driver, net, made = _setup_race(MemoryStore(), "fd00:1::/64", seen_missing)
    driver.setup(net)
    assert made[0] == "bridge" and made[1][0] == "vxlan"


def test_sync_reads_the_device_before_the_records(monkeypatch):
    """A connect's sync and the agent race on one VXLAN device: read the
    records first and an entry the agent added since, from a newer record,
    looks unwanted and is deleted behind the agent's back.  So the device
    is read first (what the agent adds in between is only appended again)."""
    from nsnet.cluster import registry

    order: list[str] = []
    monkeypatch.setattr(registry.VxlanApplier, "sync_from_kernel",
                        lambda self: (order.append("device"), self)[1])
    monkeypatch.setattr(registry.VxlanApplier, "apply", lambda self, desired: [])
    driver = _driver(MemoryStore(), "h1", set())
    driver.ctx.rtnl = SimpleNamespace(find_link=lambda name: SimpleNamespace(index=7))
    monkeypatch.setattr(driver, "records", lambda name: (order.append("records"), [])[1])
    monkeypatch.setattr(driver, "store_names", lambda net, records: False)
    driver.sync(plan_network(NetworkSpec("ov", "10.200.0.0/16", driver="overlay")))
    assert order == ["device", "records"]
