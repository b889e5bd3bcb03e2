import pytest

from nsnet.errors import InvalidInput
from nsnet.model import (
    parse_ip,
    parse_subnet,
    validate_ifname,
    validate_mac,
    validate_mtu,
    validate_netns_name,
    validate_network_name,
)


@pytest.mark.parametrize("name", ["eth0", "veth1", "a" * 15, "br-0123456789a", "x.y"])
def test_ifname_ok(name):
    assert validate_ifname(name) == name


@pytest.mark.parametrize(("name", "reason"), [
    ("", "must not be empty"),
    ("a" * 16, "16 bytes; the kernel allows at most 15"),
    ("é" * 8, "16 bytes"),
    ("a/b", "illegal character '/'"),
    ("a:b", "illegal character ':'"),
    ("a b", "illegal character ' '"),
    ("..", "is not allowed"),
])
def test_ifname_bad(name, reason):
    with pytest.raises(InvalidInput, match=reason):
        validate_ifname(name)


@pytest.mark.parametrize("name", ["", "/", "a/b", "..", ".", "x\0y", "a" * 256, "a\nb"])
def test_netns_name_bad(name):
    with pytest.raises(InvalidInput):
        validate_netns_name(name)


def test_netns_name_ok():
    assert validate_netns_name("ns1") == "ns1"
    assert validate_netns_name("my.ns-1_x") == "my.ns-1_x"


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 65])
def test_network_name_bad(name):
    with pytest.raises(InvalidInput):
        validate_network_name(name)


@pytest.mark.parametrize(("text", "reason"), [
    ("10.0.0.0/33", "is not a CIDR"),
    ("nope", "is not a CIDR"),
    ("10.0.0.0", "needs a prefix length"),
    ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8"),
])
def test_subnet_bad(text, reason):
    with pytest.raises(InvalidInput, match=reason):
        parse_subnet(text)


def test_ip_and_mac_and_mtu():
    assert str(parse_ip("172.16.1.1")) == "172.16.1.1"
    with pytest.raises(InvalidInput, match="not an IP address"):
        parse_ip("172.16.1.300")
    assert validate_mac("02:AA:bb:cc:dd:ee") == "02:aa:bb:cc:dd:ee"
    for bad in ("02:aa:bb:cc:dd", "zz:aa:bb:cc:dd:ee", "01:00:5e:00:00:01", "00:00:00:00:00:00"):
        with pytest.raises(InvalidInput):
            validate_mac(bad)
    assert validate_mtu(1500) == 1500
    for bad in (0, 67, 65536):
        with pytest.raises(InvalidInput, match="out of range"):
            validate_mtu(bad)


# --------------------------------------------- subnets a bridge cannot use (#12.13)
@pytest.mark.parametrize(("cidr", "why"), [
    ("127.0.0.0/8", "loopback"), ("127.1.0.0/24", "loopback"),
    ("0.0.0.0/8", "this network"), ("0.0.0.0/0", "overlaps"),
    ("224.0.0.0/24", "multicast"), ("239.255.0.0/16", "multicast"),
    ("240.0.0.0/24", "reserved"), ("255.255.255.252/30", "limited broadcast"),
    ("128.0.0.0/1", "overlaps 224.0.0.0/4"),
])
def test_subnets_that_cannot_be_a_bridge_network_are_refused(cidr, why):
    from nsnet.ipam import Pool
    from nsnet.model import check_bridge_subnet

    with pytest.raises(InvalidInput, match=f"cannot be a bridge network.*{why}"):
        check_bridge_subnet(parse_subnet(cidr))
    with pytest.raises(InvalidInput, match="cannot be a bridge network"):
        Pool.parse(cidr)  # what the engine, topologies and the CNI plugin all go through


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/24",
                                  "198.51.100.0/24", "100.64.0.0/10", "169.254.172.0/22",
                                  "223.255.255.0/24", "1.0.0.0/8"])
def test_ordinary_and_link_local_subnets_are_accepted(cidr):
    from nsnet.ipam import Pool
    from nsnet.model import check_bridge_subnet

    assert str(check_bridge_subnet(parse_subnet(cidr))) == cidr
    assert str(Pool.parse(cidr).subnet) == cidr


# ------------------------------------------ settings from the environment (#12.11)
@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-inf", "-1", "1e400", " ", "0x10"])
def test_lock_timeout_must_be_a_finite_number_of_seconds(monkeypatch, value):
    from nsnet.config import env_seconds

    monkeypatch.setenv("NSNET_LOCK_TIMEOUT", value)
    if value.strip():
        with pytest.raises(InvalidInput, match=r"NSNET_LOCK_TIMEOUT=.* is not a number of sec"):
            env_seconds("NSNET_LOCK_TIMEOUT", 120.0)
    else:
        assert env_seconds("NSNET_LOCK_TIMEOUT", 120.0) == 120.0


def test_lock_timeout_good_values(monkeypatch):
    from nsnet.config import env_seconds
    from nsnet.state import StateLock

    for text, value in (("0", 0.0), ("2.5", 2.5), ("30", 30.0)):
        monkeypatch.setenv("NSNET_LOCK_TIMEOUT", text)
        assert env_seconds("NSNET_LOCK_TIMEOUT", 120.0) == value
    monkeypatch.setenv("NSNET_LOCK_TIMEOUT", "nan")
    with pytest.raises(InvalidInput):
        StateLock("/nonexistent")
    assert StateLock("/nonexistent", timeout=3).timeout == 3  # an explicit value wins


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "٣", "delete", "x:y;z"])
def test_crash_at_must_be_a_count_or_a_label(monkeypatch, value):
    from nsnet.config import check_env_settings

    monkeypatch.setenv("NSNET_CRASH_AT", value)
    with pytest.raises(InvalidInput, match=r"NSNET_CRASH_AT=.* is neither a number of crash"):
        check_env_settings()
    for good in ("0", "17", "delete:committed", "network_create:journaled", ""):
        monkeypatch.setenv("NSNET_CRASH_AT", good)
        check_env_settings()
