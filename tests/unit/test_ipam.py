import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsnet.errors import Conflict, InvalidInput, PoolExhausted
from nsnet.ipam import Pool


def test_default_gateway_is_first_usable():
    pool = Pool.parse("10.1.0.0/24")
    assert str(pool.gateway) == "10.1.0.1"
    assert [str(a) for a in pool.allocate([], 3)] == ["10.1.0.2", "10.1.0.3", "10.1.0.4"]


def test_lowest_free_skips_used_and_reserved():
    pool = Pool.parse("172.16.0.0/16", gateway="172.16.1.254")
    got = pool.allocate(["172.16.0.1", "172.16.0.3"], 2)
    assert [str(a) for a in got] == ["172.16.0.2", "172.16.0.4"]


def test_ip_range_is_respected():
    pool = Pool.parse("10.0.0.0/16", ip_range="10.0.5.0/24")
    assert str(pool.allocate([], 1)[0]) == "10.0.5.0"
    assert pool.capacity() == 256


def test_never_network_broadcast_or_gateway():
    pool = Pool.parse("10.0.0.0/30")
    assert [str(a) for a in pool.allocate([], 1)] == ["10.0.0.2"]
    with pytest.raises(PoolExhausted, match="exhausted: asked for 2, 1 free"):
        pool.allocate([], 2)


def test_static_checks():
    pool = Pool.parse("10.0.0.0/24")
    assert str(pool.check_static("10.0.0.9", [])) == "10.0.0.9"
    with pytest.raises(Conflict, match="already in use"):
        pool.check_static("10.0.0.9", ["10.0.0.9"])
    with pytest.raises(Conflict, match="is the gateway"):
        pool.check_static("10.0.0.1", [])
    with pytest.raises(InvalidInput, match="outside subnet"):
        pool.check_static("10.0.1.9", [])
    with pytest.raises(InvalidInput, match="broadcast address"):
        pool.check_static("10.0.0.255", [])


@pytest.mark.parametrize(("kw", "reason"), [
    ({"gateway": "10.9.0.1"}, "gateway 10.9.0.1 is outside subnet"),
    ({"gateway": "10.0.0.0"}, "network address"),
    ({"ip_range": "10.9.0.0/24"}, "not inside subnet"),
    ({"gateway": "bad"}, "not an IP address"),
])
def test_bad_pools(kw, reason):
    with pytest.raises(InvalidInput, match=reason):
        Pool.parse("10.0.0.0/24", **kw)


def test_too_small():
    with pytest.raises(InvalidInput, match="too small"):
        Pool.parse("10.0.0.0/31")


def test_addresses_in_use_are_skipped():
    # (the unused store-interface wrapper `allocate` was removed, issue #15;
    # the engine passes the addresses in use, as here)
    assert str(Pool.parse("10.0.0.0/24").allocate({"10.0.0.2"}, 1)[0]) == "10.0.0.3"


@given(st.integers(22, 29), st.sets(st.integers(0, 63), max_size=20), st.integers(1, 5))
def test_allocation_properties(prefix, used_offsets, count):
    pool = Pool.parse(f"10.20.0.0/{prefix}")
    net = pool.subnet
    used = {str(net.network_address + o) for o in used_offsets if o < net.num_addresses}
    reserved = (net.network_address, net.broadcast_address, pool.gateway)
    free = [ip for ip in net if ip not in reserved and str(ip) not in used]
    if len(free) < count:
        with pytest.raises(PoolExhausted):
            pool.allocate(used, count)
        return
    got = pool.allocate(used, count)
    assert got == free[:count]  # the lowest free ones, never reserved or used
    assert all(isinstance(ip, ipaddress.IPv4Address) for ip in got)
