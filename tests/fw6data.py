"""Networks, endpoints and published ports for the IPv6 firewall tests
(unit golden JSON and the kernel load test share them)."""

from __future__ import annotations

from nsnet import parse_ports
from nsnet.model import Endpoint, Network, Published


def _net(i: int, v4: bool = True, **kw) -> Network:
    n = kw.pop("eps", 2)
    mode = kw.pop("ipv6_mode", "nat")
    eps = tuple(Endpoint(f"{i:02d}ep{j}".ljust(32, "e"), f"net{i}", f"ns{i}-{j}", "eth0",
                         f"veth{i}x{j}", f"10.{i}.0.{j + 2}/24" if v4 else "",
                         "02:00:00:00:00:01", f"10.{i}.0.1" if v4 else "", True, 1.0,
                         address6=f"fd00:{i}::{j + 2}/64", gateway6=f"fd00:{i}::1")
                for j in range(n))
    return Network(f"{i:02d}".ljust(32, "a"), f"net{i}", f"br{i}",
                   f"10.{i}.0.0/24" if v4 else "", f"10.{i}.0.1" if v4 else "",
                   f"10.{i}.0.0/24" if v4 else "", 1500, 1.0, endpoints=eps,
                   subnet6=f"fd00:{i}::/64", gateway6=f"fd00:{i}::1",
                   ip_range6=f"fd00:{i}::/64", ipv6_mode=mode, **kw)


def _v4only(i: int, **kw) -> Network:
    eps = tuple(Endpoint(f"{i:02d}ep{j}".ljust(32, "e"), f"net{i}", f"ns{i}-{j}", "eth0",
                         f"veth{i}x{j}", f"10.{i}.0.{j + 2}/24", "02:00:00:00:00:01",
                         f"10.{i}.0.1", True, 1.0) for j in range(2))
    return Network(f"{i:02d}".ljust(32, "a"), f"net{i}", f"br{i}", f"10.{i}.0.0/24",
                   f"10.{i}.0.1", f"10.{i}.0.0/24", 1500, 1.0, endpoints=eps, **kw)


def _pub(net: Network, spec: str, j: int = 0) -> list[Published]:
    ep = net.endpoints[j]
    return [Published(ep.id, net.name, ep.netns, ep.ip, m, ep.ip6, net.ipv6_mode == "routed")
            for m in parse_ports([spec], ipv6=True)]
