"""Address allocation: pure, over a small store interface.

Rules (Docker's): the default gateway is the first usable address; the
network and broadcast addresses and the gateway are never handed out;
dynamic allocation takes the lowest free address of the range.

IPv6 the same way (Docker's IPAM since 25.0: sequential, no EUI-64): the
gateway is ``::1`` of the subnet, endpoints get ``::2``, ``::3``...; the
subnet's first address (the Subnet-Router anycast address, RFC 4291 2.6.1)
is never handed out, and there is no broadcast address.  Allocation walks
upward from the range's start and stops at the first ``count`` free
addresses, so its cost is O(addresses in use + count), never O(size of the
/64).  A network created with ``--ipv6`` and no IPv6 subnet gets a /64 from
the host's unique-local prefix (:mod:`nsnet.ipam.ula`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import Conflict, InvalidInput, PoolExhausted
from ..model.validate import IPAddr, IPNetwork, check_bridge_subnet, parse_ip, parse_subnet

__all__ = ["LeaseStore", "Pool", "allocate", "ipv6_pool"]


class LeaseStore(Protocol):
    def used_addresses(self, network_id: str) -> set[str]: ...


@dataclass(frozen=True)
class Pool:
    subnet: IPNetwork
    gateway: IPAddr
    ip_range: IPNetwork

    @classmethod
    def parse(cls, subnet: str, gateway: str | None = None,
              ip_range: str | None = None) -> Pool:
        net = check_bridge_subnet(parse_subnet(subnet))
        if net.version == 4 and net.prefixlen > 30:
            raise InvalidInput(f"subnet {subnet} is too small: a bridge network needs at "
                               "least a /30 (gateway + one endpoint)")
        if net.version == 6 and net.prefixlen > 126:
            raise InvalidInput(f"subnet {subnet} is too small: a bridge network needs at "
                               "least a /126 (the subnet-router address, gateway + one "
                               "endpoint); /64 is usual")
        rng = parse_subnet(ip_range, "ip-range") if ip_range else net
        if rng.version != net.version or not rng.subnet_of(net):  # type: ignore[arg-type]
            raise InvalidInput(f"ip-range {ip_range} is not inside subnet {subnet}")
        gw = parse_ip(gateway, "gateway") if gateway else net.network_address + 1
        pool = cls(net, gw, rng)
        if gateway:
            pool._check_in_subnet(gw, "gateway")
        return pool

    def _check_in_subnet(self, ip: IPAddr, what: str) -> None:
        if ip.version != self.subnet.version or ip not in self.subnet:
            raise InvalidInput(f"{what} {ip} is outside subnet {self.subnet}")
        if ip in self._unusable():
            kind = "network" if ip == self.subnet.network_address else "broadcast"
            if self.subnet.version == 6:
                kind = "subnet-router anycast"
            raise InvalidInput(f"{what} {ip} is the {kind} address of {self.subnet}")

    def _unusable(self) -> tuple[IPAddr, ...]:
        if self.subnet.version == 6:  # no broadcast in IPv6
            return (self.subnet.network_address,)
        return (self.subnet.network_address, self.subnet.broadcast_address)

    def _reserved(self) -> set[IPAddr]:
        return {*self._unusable(), self.gateway}

    def capacity(self) -> int:
        return self.ip_range.num_addresses - sum(ip in self.ip_range for ip in self._reserved())

    def check_static(self, text: str, used: Iterable[str]) -> IPAddr:
        what = "--ip6" if self.subnet.version == 6 else "--ip"
        ip = parse_ip(text, what)
        self._check_in_subnet(ip, what)
        if ip == self.gateway:
            raise Conflict(f"address {ip} is the gateway of subnet {self.subnet}")
        if str(ip) in set(used):
            raise Conflict(f"address {ip} is already in use on this network")
        return ip

    def _candidates(self, taken: set[IPAddr]) -> Iterable[IPAddr]:
        reserved = self._reserved() | taken
        first = int(self.ip_range.network_address)
        last = int(self.ip_range.broadcast_address)
        make = ipaddress.ip_address
        for n in range(first, last + 1):
            ip = make(n)
            if ip not in reserved:
                yield ip

    def allocate(self, used: Iterable[str], count: int) -> list[IPAddr]:
        """The ``count`` lowest free addresses, all or nothing."""
        taken = {ip for ip in map(ipaddress.ip_address, used) if ip.version == self.subnet.version}
        out: list[IPAddr] = []
        for ip in self._candidates(taken):
            if len(out) == count:
                break
            out.append(ip)
        if len(out) < count:
            raise PoolExhausted(f"address pool {self.ip_range} is exhausted: asked for "
                                f"{count}, {len(out)} free")
        return out


def allocate(store: LeaseStore, network_id: str, pool: Pool, count: int) -> list[IPAddr]:
    return pool.allocate(store.used_addresses(network_id), count)


def ipv6_pool(subnet6: str | None, gateway6: str | None = None, ip_range6: str | None = None,
              *, enabled: bool = False, ipv4: bool = True, ula_global_id: str | None = None,
              taken: Iterable[str] = ()) -> Pool | None:
    """The IPv6 pool a ``network create`` asks for, or None (IPv4 only).

    Docker's rules: ``--ipv6`` with no IPv6 subnet gets one from the default
    pool (here: the lowest free /64 of the host's ULA prefix, never one of
    ``taken``, see :mod:`nsnet.ipam.ula`); an IPv6 subnet, gateway or range
    without ``--ipv6`` turns IPv6 on (a subnet says what the user wants); an
    IPv6-only network (``ipv4=False``) must have IPv6.  The family of every
    argument is checked, with the option named."""
    if not (enabled or subnet6 or gateway6 or ip_range6):
        if not ipv4:
            raise InvalidInput("an IPv6-only network (--ipv4=false) needs --ipv6 or an "
                               "IPv6 --subnet")
        return None
    if (gateway6 or ip_range6) and not subnet6:
        raise InvalidInput("an IPv6 --gateway or --ip-range needs an IPv6 --subnet")
    if subnet6 is None:
        from .ula import pick_subnet

        if ula_global_id is None:
            raise InvalidInput("no IPv6 subnet given and no unique-local prefix to pick from")
        subnet6 = str(pick_subnet(ula_global_id, taken))
    for text, what in ((subnet6, "subnet"), (ip_range6, "ip-range")):
        if text and parse_subnet(text, what).version != 6:
            raise InvalidInput(f"{what} {text} is not an IPv6 subnet")
    if gateway6 and parse_ip(gateway6, "gateway").version != 6:
        raise InvalidInput(f"gateway {gateway6} is not an IPv6 address")
    return Pool.parse(subnet6, gateway6, ip_range6)
