"""IPv6 in the pure layers: validation, the model's new fields, the
allocator inside a v6 subnet and the host's unique-local pool (#16)."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsnet.errors import Conflict, InvalidInput, PoolExhausted
from nsnet.ipam import Pool
from nsnet.ipam.ula import new_global_id, parse_global_id, pick_subnet, ula_prefix
from nsnet.model import (
    Endpoint,
    Network,
    NetworkSpec,
    PortMap,
    check_bridge_subnet,
    check_endpoint_ip6,
    first_clash,
    parse_ports,
    parse_subnet,
    validate_ipv6_mode,
)


# --------------------------------------------------------------- validation
@pytest.mark.parametrize(("subnet", "reason"), [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/0", "cannot be a bridge network"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::ffff:10.0.0.0/120", "IPv4-mapped"),
    ("ff00::/8", "multicast"),
    ("ff02::/64", "multicast"),
    ("fe80::/64", "link-local"),
    ("fe80::/10", "link-local"),
    ("febf:1::/64", "link-local"),
    ("100::/64", "discard"),
])
def test_unusable_v6_subnets_are_refused_with_a_reason(subnet, reason):
    with pytest.raises(InvalidInput, match=reason):
        check_bridge_subnet(parse_subnet(subnet))
    with pytest.raises(InvalidInput, match=reason):
        Pool.parse(subnet)


@pytest.mark.parametrize("subnet", ["fd00:1::/64", "2001:db8::/64", "2001:db8::/48",
                                    "2001:db8:1::/120", "fd12:3456:789a:1::/126",
                                    "64:ff9b:1::/96", "2000::/3"])
def test_usable_v6_subnets(subnet):
    # Docker sets no prefix-length limit (validateIPv6Subnet); nsnet only
    # needs room for the gateway and one endpoint
    assert Pool.parse(subnet).subnet == ipaddress.IPv6Network(subnet)


def test_v6_subnet_too_small_for_an_endpoint():
    with pytest.raises(InvalidInput, match=r"too small.*/126"):
        Pool.parse("fd00::/127")
    with pytest.raises(InvalidInput, match="too small"):
        Pool.parse("fd00::5/128")


def test_v6_subnet_with_host_bits_is_refused():
    with pytest.raises(InvalidInput, match="host bits set; did you mean fd00:1::/64"):
        parse_subnet("fd00:1::5/64")


def test_ipv6_modes():
    assert validate_ipv6_mode("nat") == "nat"
    assert validate_ipv6_mode("routed") == "routed"
    with pytest.raises(InvalidInput, match="not one of nat, routed"):
        validate_ipv6_mode("nat-unprotected")


def test_endpoint_ip6_checks():
    assert str(check_endpoint_ip6(ipaddress.ip_address("fd00::2"))) == "fd00::2"
    for bad in ("10.0.0.1", "fe80::2", "::1", "ff02::1", "::ffff:10.0.0.1"):
        with pytest.raises(InvalidInput):
            check_endpoint_ip6(ipaddress.ip_address(bad))


# -------------------------------------------------------------------- model
def test_new_fields_are_additive_and_default_to_ipv4_only():
    spec = NetworkSpec("n", "10.0.0.0/24")
    assert (spec.ipv6, spec.subnet6, spec.ipv6_mode, spec.ipv4) == (False, None, "nat", True)
    net = Network("id", "n", "br", "10.0.0.0/24", "10.0.0.1", "10.0.0.0/24", 1500, 1.0)
    assert net.has_ipv4 and not net.has_ipv6 and net.gateways == ("10.0.0.1",)
    dual = Network("id", "n", "br", "10.0.0.0/24", "10.0.0.1", "10.0.0.0/24", 1500, 1.0,
                   subnet6="fd00:1::/64", gateway6="fd00:1::1", ip_range6="fd00:1::/64")
    assert dual.gateways == ("10.0.0.1", "fd00:1::1") and dual.prefixlen6 == 64
    only6 = Network("id", "n", "br", "", "", "", 1500, 1.0, subnet6="fd00:1::/64",
                    gateway6="fd00:1::1", ip_range6="fd00:1::/64")
    assert not only6.has_ipv4 and only6.gateways == ("fd00:1::1",)
    assert only6.to_dict()["subnet6"] == "fd00:1::/64"
    ep = Endpoint("e", "n", "ns", "eth0", "veth", "10.0.0.2/24", "02:00:00:00:00:01",
                  "10.0.0.1", True, 1.0, address6="fd00:1::2/64", gateway6="fd00:1::1")
    assert ep.ip6 == "fd00:1::2" and ep.ips == ("10.0.0.2", "fd00:1::2")
    assert ep.to_dict()["address6"] == "fd00:1::2/64"


# -------------------------------------------------------------------- ports
def test_v6_host_addresses_need_the_ipv6_switch():
    with pytest.raises(InvalidInput, match="IPv6 host addresses are not supported yet"):
        parse_ports(["[2001:db8::1]:8080:80"])
    assert parse_ports(["[2001:db8::1]:8080:80"], ipv6=True) == (
        PortMap("tcp", "2001:db8::1", 8080, 80),)
    assert parse_ports(["[::]:8080:80/udp"], ipv6=True) == (PortMap("udp", "::", 8080, 80),)
    assert parse_ports(["[::]::80"], ipv6=True) == (PortMap("tcp", "::", 0, 80),)


def test_unbracketed_v6_host_address_parses_as_docker():
    assert parse_ports(["2001:db8::1:8080:80"], ipv6=True) == (
        PortMap("tcp", "2001:db8::1", 8080, 80),)


def test_loopback_v6_is_refused_with_the_reason():
    with pytest.raises(InvalidInput, match=r"\[::1\] cannot be published.*route_localnet"):
        parse_ports(["[::1]:8080:80"], ipv6=True)
    for bad in ("[fe80::1]:8080:80", "[ff02::1]:8080:80", "[::ffff:10.0.0.1]:8080:80"):
        with pytest.raises(InvalidInput, match="not a unicast address"):
            parse_ports([bad], ipv6=True)


def test_families_of_a_mapping():
    """Docker: ``-p 8080:80`` (and 0.0.0.0) serves both families, ``[::]``
    every IPv6 address only."""
    assert PortMap("tcp", "", 8080, 80).families == (4, 6)
    assert parse_ports(["0.0.0.0:8080:80"], ipv6=True)[0].families == (4, 6)
    assert PortMap("tcp", "::", 8080, 80).families == (6,)
    assert PortMap("tcp", "2001:db8::1", 8080, 80).families == (6,)
    assert PortMap("tcp", "198.51.100.1", 8080, 80).families == (4,)


@pytest.mark.parametrize(("a", "b", "clash"), [
    ("", "::", True), ("::", "2001:db8::1", True), ("2001:db8::1", "::", True),
    ("::", "198.51.100.1", False), ("198.51.100.1", "::", False),
    ("2001:db8::1", "2001:db8::2", False), ("2001:db8::1", "2001:db8::1", True),
    ("2001:db8::1", "", True), ("::", "::", True),
])
def test_v6_clashes(a, b, clash):
    ma, mb = PortMap("tcp", a, 8080, 80), PortMap("tcp", b, 8080, 81)
    assert ma.clashes(mb) == clash == mb.clashes(ma)
    assert (first_clash([mb], [ma]) is not None) == clash
    assert (first_clash([ma, mb]) is not None) == clash


@given(st.lists(st.sampled_from(["", "::", "2001:db8::1", "2001:db8::2", "198.51.100.1",
                                 "198.51.100.2"]), min_size=1, max_size=6))
def test_first_clash_agrees_with_pairwise_clashes(ips):
    maps = [PortMap("tcp", ip, 8080, i) for i, ip in enumerate(ips)]
    pairwise = any(maps[i].clashes(maps[j]) for i in range(len(maps)) for j in range(i))
    assert (first_clash(maps) is not None) == pairwise


# --------------------------------------------------------------------- ipam
def test_v6_sequential_from_the_gateway_like_docker():
    pool = Pool.parse("fd00:1::/64")
    assert str(pool.gateway) == "fd00:1::1"
    assert [str(a) for a in pool.allocate([], 3)] == ["fd00:1::2", "fd00:1::3", "fd00:1::4"]
    got = pool.allocate(["fd00:1::2", "fd00:1::4", "10.0.0.2"], 2)
    assert [str(a) for a in got] == ["fd00:1::3", "fd00:1::5"]


def test_v6_custom_gateway_and_range():
    pool = Pool.parse("2001:db8::/64", gateway="2001:db8::ffff",
                      ip_range="2001:db8::1:0/112")
    assert [str(a) for a in pool.allocate([], 2)] == ["2001:db8::1:0", "2001:db8::1:1"]
    with pytest.raises(InvalidInput, match="not inside subnet"):
        Pool.parse("2001:db8::/64", ip_range="2001:db8:1::/112")
    with pytest.raises(InvalidInput, match="outside subnet"):
        Pool.parse("2001:db8::/64", gateway="2001:db9::1")


def test_v6_no_broadcast_but_subnet_router_reserved():
    pool = Pool.parse("fd00::/126")  # ::0 subnet-router, ::1 gateway, ::2 and ::3 free
    assert [str(a) for a in pool.allocate([], 2)] == ["fd00::2", "fd00::3"]
    assert pool.capacity() == 2
    with pytest.raises(PoolExhausted):
        pool.allocate([], 3)
    with pytest.raises(InvalidInput, match="subnet-router anycast"):
        pool.check_static("fd00::", [])


def test_v6_static_checks():
    pool = Pool.parse("fd00:1::/64")
    assert str(pool.check_static("fd00:1::abcd", [])) == "fd00:1::abcd"
    with pytest.raises(Conflict, match="already in use"):
        pool.check_static("fd00:1::abcd", ["fd00:1::abcd"])
    with pytest.raises(Conflict, match="is the gateway"):
        pool.check_static("fd00:1::1", [])
    with pytest.raises(InvalidInput, match="--ip6 fd00:2::1 is outside"):
        pool.check_static("fd00:2::1", [])


def test_v6_allocation_never_scans_the_64():
    """1000 addresses out of a /64 with 1000 in use: proportional to what
    is used, not to 2**64 (a scan would not finish)."""
    pool = Pool.parse("fd00:1::/64")
    used = [str(a) for a in pool.allocate([], 1000)]
    start = time.process_time()
    got = pool.allocate(used, 1000)
    assert time.process_time() - start < 2.0
    assert str(got[0]) == "fd00:1::3ea" and len(set(got) | set(used)) == 2000
    assert pool.capacity() == 2**64 - 2


# ---------------------------------------------------------------------- ULA
def test_global_id_is_40_random_bits():
    ids = {new_global_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 10 for i in ids)
    for bad in ("", "xyz", "12345678901", "123456789"):
        with pytest.raises(InvalidInput):
            parse_global_id(bad)


def test_ula_prefix_is_fd_plus_global_id():
    assert str(ula_prefix("123456789a")) == "fd12:3456:789a::/48"
    assert ula_prefix("0000000000").subnet_of(ipaddress.IPv6Network("fd00::/8"))


def test_pick_subnet_lowest_free_64():
    gid = "123456789a"
    assert str(pick_subnet(gid, [])) == "fd12:3456:789a::/64"
    taken = ["fd12:3456:789a::/64", "fd12:3456:789a:1::/64", "fd12:3456:789a:3::/64",
             "10.0.0.0/24", "fd99::/64"]
    assert str(pick_subnet(gid, taken)) == "fd12:3456:789a:2::/64"
    # a user's /56 inside the /48 blocks its 256 /64s
    assert str(pick_subnet(gid, ["fd12:3456:789a::/56"])) == "fd12:3456:789a:100::/64"
    # a user's /120 inside the first /64 blocks that /64
    assert str(pick_subnet(gid, ["fd12:3456:789a::100/120"])) == "fd12:3456:789a:1::/64"


def test_pick_subnet_refuses_when_the_48_is_covered():
    with pytest.raises(PoolExhausted, match="lies inside fd00::/8"):
        pick_subnet("123456789a", ["fd00::/8"])
    with pytest.raises(PoolExhausted, match="every /64"):
        pick_subnet("123456789a", ["fd12:3456:789a:8000::/49", "fd12:3456:789a::/49"])


@given(st.lists(st.integers(0, 40), max_size=12))
def test_picked_subnet_never_overlaps_taken(ids):
    gid = "00000000ff"
    base = int(ula_prefix(gid).network_address)
    taken = [ipaddress.IPv6Network((base + (i << 64), 64)) for i in ids]
    got = pick_subnet(gid, taken)
    assert not any(got.overlaps(t) for t in taken)
    free = min(set(range(42)) - set(ids))
    assert got == ipaddress.IPv6Network((base + (free << 64), 64))


# ------------------------------------------------ the pool of `network create`
def test_ipv6_pool_follows_dockers_options():
    from nsnet.ipam import ipv6_pool

    assert ipv6_pool(None) is None  # IPv4 only
    with pytest.raises(InvalidInput, match=r"IPv6-only network.*needs --ipv6"):
        ipv6_pool(None, ipv4=False)
    picked = ipv6_pool(None, enabled=True, ula_global_id="123456789a",
                       taken=["fd12:3456:789a::/64"])
    assert str(picked.subnet) == "fd12:3456:789a:1::/64" and str(picked.gateway).endswith(
        ":1::1")
    given_ = ipv6_pool("2001:db8:1::/64", "2001:db8:1::fe", "2001:db8:1::100/120")
    assert (str(given_.gateway), str(given_.ip_range)) == ("2001:db8:1::fe",
                                                           "2001:db8:1::100/120")
    with pytest.raises(InvalidInput, match="is not an IPv6 subnet"):
        ipv6_pool("10.0.0.0/24")
    with pytest.raises(InvalidInput, match="not an IPv6 address"):
        ipv6_pool("fd00::/64", "10.0.0.1")
    with pytest.raises(InvalidInput, match="needs an IPv6 --subnet"):
        ipv6_pool(None, "fd00::1", enabled=True, ula_global_id="123456789a")
    with pytest.raises(InvalidInput, match="link-local"):
        ipv6_pool("fe80::/64")
