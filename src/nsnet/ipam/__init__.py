"""Address allocation: pure (the caller passes the addresses in use).

Rules (Docker's): the default gateway is the first usable address; the
network and broadcast addresses and the gateway are never handed out;
dynamic allocation takes the lowest free address of the range.  The model
is address-family generic; network creation refuses IPv6 until dual-stack
lands, not this module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Conflict, InvalidInput, PoolExhausted
from ..model.validate import IPAddr, IPNetwork, check_bridge_subnet, parse_ip, parse_subnet

__all__ = ["Pool"]


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
        if ip in (self.subnet.network_address, self.subnet.broadcast_address):
            kind = "network" if ip == self.subnet.network_address else "broadcast"
            raise InvalidInput(f"{what} {ip} is the {kind} address of {self.subnet}")

    def _reserved(self) -> set[IPAddr]:
        return {self.subnet.network_address, self.subnet.broadcast_address, self.gateway}

    def capacity(self) -> int:
        return self.ip_range.num_addresses - sum(ip in self.ip_range for ip in self._reserved())

    def check_static(self, text: str, used: Iterable[str]) -> IPAddr:
        ip = parse_ip(text, "--ip")
        self._check_in_subnet(ip, "--ip")
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
        taken = {ipaddress.ip_address(u) for u in used}
        out: list[IPAddr] = []
        for ip in self._candidates(taken):
            if len(out) == count:
                break
            out.append(ip)
        if len(out) < count:
            raise PoolExhausted(f"address pool {self.ip_range} is exhausted: asked for "
                                f"{count}, {len(out)} free")
        return out

