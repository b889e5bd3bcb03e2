"""Pure data: what nsnet manages, with no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .validate import (
    parse_ip,
    parse_subnet,
    validate_ifname,
    validate_mac,
    validate_mtu,
    validate_netns_name,
    validate_network_name,
)

__all__ = [
    "ALIAS_PREFIX",
    "ConnectOptions",
    "Endpoint",
    "Namespace",
    "Network",
    "NetworkSpec",
    "bridge_alias",
    "parse_ip",
    "parse_subnet",
    "validate_ifname",
    "validate_mac",
    "validate_mtu",
    "validate_netns_name",
    "validate_network_name",
    "veth_alias",
]


# Ownership marks: the link alias of every kernel object nsnet creates.
ALIAS_PREFIX = "nsnet:"


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
    endpoints: tuple[Endpoint, ...] = field(default=(), compare=False)

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.split("/")[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
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

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConnectOptions:
    """Per-endpoint options of ``connect`` (the static ones apply to a single
    namespace only)."""

    ip: str | None = None
    mac: str | None = None
    ifname: str | None = None
    host_ifname: str | None = None
    create: bool = False


@dataclass(frozen=True)
class Namespace:
    name: str
    path: str
    owned: bool
    networks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
