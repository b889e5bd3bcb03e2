"""Pure data: what nsnet manages, with no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidInput
from .validate import (
    check_bridge_subnet,
    parse_ip,
    parse_port_specs,
    parse_subnet,
    validate_dns_name,
    validate_ifname,
    validate_mac,
    validate_mtu,
    validate_netns_name,
    validate_network_name,
)

__all__ = [
    "ALIAS_PREFIX",
    "HANDOFF_PATH",
    "ConnectOptions",
    "Endpoint",
    "Namespace",
    "Network",
    "NetworkSpec",
    "PortMap",
    "Published",
    "bridge_alias",
    "check_bridge_subnet",
    "first_clash",
    "parse_ip",
    "parse_ports",
    "parse_subnet",
    "validate_dns_name",
    "validate_ifname",
    "validate_mac",
    "validate_mtu",
    "validate_netns_name",
    "validate_network_name",
    "veth_alias",
]


# Ownership marks: the link alias of every kernel object nsnet creates.
ALIAS_PREFIX = "nsnet:"

# The recorded "path" of a handed-off endpoint's namespace: another manager
# (Docker) moved the endpoint's inside into a namespace nsnet never names.
HANDOFF_PATH = "(handed off)"


def parse_ports(specs: list[str] | tuple[str, ...]) -> tuple[PortMap, ...]:
    """Docker's ``-p [[HOST_IP:]HOST_PORT[-END]:]PORT[-END][/tcp|/udp]``, ranges
    expanded (host port 0: ephemeral, chosen when published); raises
    InvalidInput (naming the port) on bad or clashing ones."""
    maps = tuple(PortMap(*t) for t in parse_port_specs(specs))
    clash = first_clash(m for m in maps if m.host_port)
    if clash:
        raise InvalidInput(f"port {clash[0].host_ip or '0.0.0.0'}:{clash[0].host_port}/"
                           f"{clash[0].proto} is published twice")
    return maps


def first_clash(new: Iterable[PortMap],
                existing: Iterable[PortMap] = ()) -> tuple[PortMap, PortMap] | None:
    """The first mapping of ``new`` that clashes with ``existing`` or an
    earlier one of ``new``, with what it clashes with; in O(n)."""
    index: dict[tuple[str, int], dict[str, PortMap]] = {}
    for m in existing:
        index.setdefault((m.proto, m.host_port), {})[m.host_ip] = m
    for m in new:
        held = index.setdefault((m.proto, m.host_port), {})
        other = held.get(m.host_ip) or held.get("") or (next(iter(held.values()))
                                                         if held and not m.host_ip else None)
        if other:
            return m, other
        held[m.host_ip] = m
    return None


def bridge_alias(net_id: str) -> str:
    return f"{ALIAS_PREFIX}net:{net_id}"


def veth_alias(ep_id: str) -> str:
    return f"{ALIAS_PREFIX}ep:{ep_id}"


@dataclass(frozen=True)
class NetworkSpec:
    """What the user asks for with ``network create`` (Docker's options)."""

    name: str
    subnet: str
    gateway: str | None = None
    ip_range: str | None = None
    bridge: str | None = None
    mtu: int | None = None
    masquerade: bool = True  # SNAT traffic leaving through another interface
    internal: bool = False  # nothing in or out but its own endpoints and the gateway
    icc: bool = True  # endpoints of this network may talk to each other
    dns: bool = True  # embedded DNS: endpoints resolve each other by name
    dns_servers: tuple[str, ...] = ()  # upstreams (default: the host's resolv.conf)
    aux_addresses: tuple[tuple[str, str], ...] = ()  # (name, ip): never handed out
    labels: tuple[tuple[str, str], ...] = ()  # (key, value): free-form metadata


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    bridge: str
    subnet: str
    gateway: str
    ip_range: str
    mtu: int
    created: float
    masquerade: bool = True
    internal: bool = False
    icc: bool = True
    dns: bool = True
    dns_servers: tuple[str, ...] = ()
    aux_addresses: Pairs = ()
    labels: Pairs = ()
    endpoints: tuple[Endpoint, ...] = field(default=(), compare=False)

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.split("/")[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aux_addresses"], d["labels"] = dict(self.aux_addresses), dict(self.labels)
        d["endpoints"] = [e.to_dict() for e in self.endpoints]
        return d


@dataclass(frozen=True)
class Endpoint:
    id: str
    network: str
    netns: str
    ifname: str
    host_ifname: str
    address: str  # CIDR, e.g. 172.16.1.1/16
    mac: str
    gateway: str
    default_route: bool
    created: float
    aliases: tuple[str, ...] = ()
    labels: Pairs = ()

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        return d


@dataclass(frozen=True, order=True)
class PortMap:
    """One published port: HOST_IP:HOST_PORT/PROTO -> endpoint PORT.
    ``host_ip`` "" means every address of the host (Docker's 0.0.0.0)."""

    proto: str
    host_ip: str
    host_port: int
    port: int

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}:{self.port}/{self.proto}"


@dataclass(frozen=True)
class Published:
    """A PortMap with the endpoint it leads to."""

    endpoint: str  # endpoint id
    network: str
    netns: str
    ip: str
    port: PortMap

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "netns": self.netns, "ip": self.ip,
                "proto": self.port.proto, "host_ip": self.port.host_ip or "0.0.0.0",
                "host_port": self.port.host_port, "port": self.port.port}


@dataclass(frozen=True)
class ConnectOptions:
    """Per-endpoint options of ``connect`` (the static ones apply to a single
    namespace only)."""

    ip: str | None = None
    mac: str | None = None
    ifname: str | None = None
    host_ifname: str | None = None
    create: bool = False
    ports: tuple[PortMap, ...] = ()
    aliases: tuple[str, ...] = ()  # extra DNS names on this network
    force_ports: bool = False  # publish even where a host process listens (it loses its traffic)
    labels: Pairs = ()  # (key, value) on the endpoint


@dataclass(frozen=True)
class Namespace:
    name: str
    path: str
    owned: bool
    networks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
