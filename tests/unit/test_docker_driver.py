"""The Docker plugin's request handling for IPv6 (#16), with a stand-in
engine that records what the driver asks of it (the protocol end to end is
tests/e2e/test_docker_plugin.py, a real dockerd tests/runtime/test_docker.py)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest

from nsnet import ConnectOptions, Endpoint, Network, NetworkSpec
from nsnet.docker.driver import Driver, PluginError
from nsnet.docker.store import PluginStore

NET = "a" * 64
EP = "b" * 64


class FakeEngine:
    """What the driver calls, answered from memory."""

    def __init__(self) -> None:
        self.specs: list[NetworkSpec] = []
        self.connects: list[ConnectOptions] = []
        self.net: Network | None = None

    def close(self) -> None:
        pass

    def networks(self) -> list[Network]:
        return [self.net] if self.net else []

    def network(self, name: str) -> Network:
        assert self.net is not None
        return self.net

    def ula_subnet(self, taken: list[str]) -> str:
        return "fd12:3456:789a:1::/64" if "fd12:3456:789a::/64" in taken \
            else "fd12:3456:789a::/64"

    def network_create(self, spec: NetworkSpec) -> Network:
        self.specs.append(spec)
        self.net = Network("id", spec.name, "br", spec.subnet, spec.gateway or "",
                           spec.subnet, 1500, 0.0, subnet6=spec.subnet6 or "",
                           gateway6=spec.gateway6 or "")
        return self.net

    def connect_handoff(self, network: str, name: str, opts: ConnectOptions) -> Endpoint:
        self.connects.append(opts)
        assert self.net is not None
        ep = Endpoint("e", "id", name, "veth0", "vh0",
                      f"{opts.ip}/24" if opts.ip else ("" if not self.net.subnet
                                                       else "10.1.0.2/24"),
                      "02:00:00:00:00:01", "", True, 0.0,
                      address6=f"{opts.ip6 or 'fd00:1::2'}/64" if self.net.subnet6 else "")
        self.net = Network(**{**self.net.__dict__, "endpoints": (ep,)})
        return ep

    def snapshot(self) -> Any:
        return type("S", (), {"routes": []})()


@pytest.fixture
def driver(tmp_path) -> tuple[Driver, FakeEngine]:
    eng = FakeEngine()

    @contextmanager
    def engine():
        yield eng

    drv = Driver(lambda: eng, PluginStore(str(tmp_path)))  # type: ignore[arg-type,return-value]
    drv.engine = engine  # type: ignore[method-assign]
    return drv, eng


def test_v6_pool_without_a_subnet_is_a_ula_64_not_taken_twice(driver) -> None:
    drv, _ = driver
    first = drv.handle("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "V6": True})
    second = drv.handle("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "V6": True})
    assert (first["Pool"], second["Pool"]) == ("fd12:3456:789a::/64", "fd12:3456:789a:1::/64")


def test_v6_addresses_skip_the_subnet_router_anycast_and_the_gateway(driver) -> None:
    drv, _ = driver
    pool = drv.handle("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local",
                                                 "Pool": "fd00:1::/64", "V6": True})["PoolID"]
    gw = drv.handle("IpamDriver.RequestAddress", {"PoolID": pool, "Options": {
        "RequestAddressType": "com.docker.network.gateway"}})
    first = drv.handle("IpamDriver.RequestAddress", {"PoolID": pool})
    assert (gw["Address"], first["Address"]) == ("fd00:1::1/64", "fd00:1::2/64")
    with pytest.raises(PluginError, match="not a host address"):
        drv.handle("IpamDriver.RequestAddress", {"PoolID": pool, "Address": "fd00:1::"})
    with pytest.raises(PluginError, match="not an IPv6 address"):
        drv.handle("IpamDriver.RequestAddress", {"PoolID": pool, "Address": "10.0.0.9"})
    # v4 and v6 pools never count as overlapping each other
    drv.handle("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "10.1.0.0/24"})


@pytest.mark.parametrize(("v4", "v6", "options", "ipv4", "subnet6"), [
    ([{"Pool": "10.1.0.0/24"}], [{"Pool": "fd00:1::/64", "Gateway": "fd00:1::1/64"}],
     {"com.docker.network.enable_ipv6": True}, True, "fd00:1::/64"),
    ([], [{"Pool": "fd00:1::/64"}], {"com.docker.network.enable_ipv4": False}, False,
     "fd00:1::/64"),
    ([{"Pool": "10.1.0.0/24"}], [], {}, True, None),
])
def test_create_network_maps_each_familys_pool_to_the_spec(driver, v4, v6, options, ipv4,
                                                           subnet6) -> None:
    drv, eng = driver
    drv.handle("NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": v4,
                                               "IPv6Data": v6, "Options": options})
    [spec] = eng.specs
    assert (spec.ipv4, spec.ipv6, spec.subnet6) == (ipv4, subnet6 is not None, subnet6)
    assert spec.gateway6 == (v6[0].get("Gateway", "").split("/")[0] or None if v6 else None)


def test_endpoint_takes_dockers_ip6_and_answers_the_one_it_gave(driver) -> None:
    drv, eng = driver
    drv.handle("NetworkDriver.CreateNetwork", {"NetworkID": NET,
                                               "IPv4Data": [{"Pool": "10.1.0.0/24"}],
                                               "IPv6Data": [{"Pool": "fd00:1::/64"}]})
    answer = drv.handle("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": "10.1.0.5/24", "AddressIPv6": "fd00:1::66/64"}})
    assert (eng.connects[0].ip, eng.connects[0].ip6) == ("10.1.0.5", "fd00:1::66")
    assert answer == {"Interface": {"MacAddress": "02:00:00:00:00:01"}}
    joined = drv.handle("NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP,
                                               "SandboxKey": "/x"})
    assert "GatewayIPv6" in joined and "Gateway" in joined


def test_ipv6_only_endpoint_answers_only_its_v6_address_and_gateway(driver) -> None:
    drv, _ = driver
    drv.handle("NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.enable_ipv4": False},
        "IPv6Data": [{"Pool": "fd00:1::/64", "Gateway": "fd00:1::1"}]})
    answer = drv.handle("NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert set(answer["Interface"]) == {"AddressIPv6", "MacAddress"}
    joined = drv.handle("NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP,
                                               "SandboxKey": "/x"})
    assert joined["GatewayIPv6"] == "fd00:1::1" and "Gateway" not in joined


@pytest.mark.parametrize(("body", "words"), [
    ({"IPv4Data": [], "IPv6Data": []}, "exactly one IPv4 subnet and/or one IPv6"),
    ({"IPv6Data": [{"Pool": "10.1.0.0/24"}]}, "not an IPv6 CIDR"),
    ({"IPv4Data": [{"Pool": "fd00:1::/64"}]}, "not an IPv4 CIDR"),
    ({"IPv4Data": [{"Pool": "10.1.0.0/24"}], "IPv6Data": [{"Pool": "fd00:1::/64"}],
      "Options": {"com.docker.network.enable_ipv6": False}}, "without --ipv6"),
])
def test_bad_ipam_data_is_refused_before_anything_is_made(driver, body, words) -> None:
    drv, eng = driver
    with pytest.raises(PluginError, match=words):
        drv.handle("NetworkDriver.CreateNetwork", {"NetworkID": NET, **body})
    assert eng.specs == [] and drv.store.networks == {}
