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
