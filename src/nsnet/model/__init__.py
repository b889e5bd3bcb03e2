"""Pure data: what nsnet manages, with no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import InvalidInput
from .validate import (
    IPV6_MODES,
    check_bridge_subnet,
    check_endpoint_ip6,
    parse_ip,
    parse_port_specs,
    parse_subnet,
    validate_dns_name,
    validate_ifname,
    validate_ipv6_mode,
    validate_mac,
    validate_mtu,
    validate_netns_name,
    validate_network_name,
)

__all__ = [
    "ALIAS_PREFIX",
    "HANDOFF_PATH",
    "IPV6_MODES",
    "V6_ANY",
    "ConnectOptions",
    "Endpoint",
    "Namespace",
    "Network",
    "NetworkSpec",
    "PortMap",
    "Published",
    "bridge_alias",
    "check_bridge_subnet",
    "check_endpoint_ip6",
    "first_clash",
    "host_ips_overlap",
    "parse_ip",
    "parse_ports",
    "parse_subnet",
    "validate_dns_name",
    "validate_ifname",
    "validate_ipv6_mode",
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


def parse_ports(specs: list[str] | tuple[str, ...], ipv6: bool = False) -> tuple[PortMap, ...]:
    """Docker's ``-p [[HOST_IP:]HOST_PORT[-END]:]PORT[-END][/tcp|/udp]``, ranges
    expanded (host port 0: ephemeral, chosen when published); raises
    InvalidInput (naming the port) on bad or clashing ones.  IPv6 host
    addresses (``[2001:db8::1]:8080:80``, ``[::]:8080:80``) only with ``ipv6``."""
    maps = tuple(PortMap(*t) for t in parse_port_specs(specs, ipv6))
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
        if not other and held and ":" in m.host_ip:  # IPv6: "::" holds every v6 address
            other = held.get(V6_ANY) or (next((h for ip, h in held.items() if ":" in ip), None)
                                         if m.host_ip == V6_ANY else None)
        if other:
            return m, other
        held[m.host_ip] = m
    return None


# A published port's host_ip for "every IPv6 address of the host" (``[::]:P:P``);
# "" is every address of both families.
V6_ANY = "::"


def host_ips_overlap(a: str, b: str) -> bool:
    """Whether two published host addresses share an address ("" = all of
    both families, "::" = all IPv6 ones)."""
    if not a or not b or a == b:
        return True
    return V6_ANY in (a, b) and ":" in a and ":" in b


def bridge_alias(net_id: str) -> str:
    return f"{ALIAS_PREFIX}net:{net_id}"


def veth_alias(ep_id: str) -> str:
    return f"{ALIAS_PREFIX}ep:{ep_id}"



def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, in order (asdict without its deep copy)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}

@dataclass(frozen=True)
class NetworkSpec:
    """What the user asks for with ``network create`` (Docker's options)."""

    name: str
    subnet: str  # IPv4 subnet; "" with ipv4=False (an IPv6-only network)
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
    # IPv6 (Docker's --ipv6, a second --subnet/--gateway/--ip-range, and
    # gateway_mode_ipv6); ipv6 without subnet6: a /64 from the host's ULA pool
    ipv6: bool = False
    subnet6: str | None = None
    gateway6: str | None = None
    ip_range6: str | None = None
    ipv6_mode: str = "nat"
    ipv4: bool = True  # False: an IPv6-only network (Docker's --ipv4=false)
    driver: str = "bridge"  # "overlay": spans the hosts of a cluster (#17)


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
    # IPv6: "" when the network has none; subnet "" means IPv6-only
    subnet6: str = ""
    gateway6: str = ""
    ip_range6: str = ""
    ipv6_mode: str = "nat"
    driver: str = "bridge"  # the NetworkDriver that makes it ("bridge" or "overlay")
    # the IFLA_GROUP its endpoints' host veth ends are born in (0: none, a
    # network made before nsnet gave them one): `network rm` deletes them all
    # with one request by group, with no per-link lookup (engine/endpoints.py)
    link_group: int = 0

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.split("/")[1])

    @property
    def prefixlen6(self) -> int:
        return int(self.subnet6.split("/")[1])

    @property
    def has_ipv4(self) -> bool:
        return bool(self.subnet)

    @property
    def has_ipv6(self) -> bool:
        return bool(self.subnet6)

    @property
    def gateways(self) -> tuple[str, ...]:
        """The gateway address of each family the network has."""
        return tuple(g for g in (self.gateway if self.subnet else "", self.gateway6) if g)

    def to_dict(self) -> dict[str, Any]:
        # shallow (the fields are flat): asdict deep-copied every endpoint
        # before they were converted again below -- 0.26 s of an inspect of 1000
        d = _fields(self)  # field order kept: "endpoints" replaced below
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
    address6: str = ""  # IPv6 CIDR, e.g. fd00:1::2/64; "" on an IPv4-only network
    gateway6: str = ""

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def ip6(self) -> str:
        return self.address6.split("/")[0]

    @property
    def ips(self) -> tuple[str, ...]:
        """Every address of the endpoint, IPv4 first."""
        return tuple(a.split("/")[0] for a in (self.address, self.address6) if a)

    def to_dict(self) -> dict[str, Any]:
        d = _fields(self)
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

    def clashes(self, other: PortMap) -> bool:
        """Two mappings can't both hold: same proto and port on an overlapping
        host address ("" overlaps every address).  The pairwise rule that
        :func:`first_clash` applies in O(n) (tests/unit/test_ipv6_model.py
        checks one against the other)."""
        return (self.proto == other.proto and self.host_port == other.host_port
                and host_ips_overlap(self.host_ip, other.host_ip))

    @property
    def families(self) -> tuple[int, ...]:
        """The address families this mapping serves: "" both (Docker's
        ``-p 8080:80``), "::" or a v6 address IPv6 only, else IPv4 only."""
        if not self.host_ip:
            return (4, 6)
        return (6,) if ":" in self.host_ip else (4,)


@dataclass(frozen=True)
class Published:
    """A PortMap with the endpoint it leads to."""

    endpoint: str  # endpoint id
    network: str
    netns: str
    ip: str  # the endpoint's IPv4 address ("" on an IPv6-only network)
    port: PortMap
    ip6: str = ""  # its IPv6 address, "" if none
    routed6: bool = False  # its network's IPv6 mode is "routed": no DNAT, open directly

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "netns": self.netns, "ip": self.ip,
                "proto": self.port.proto, "host_ip": self.port.host_ip or "0.0.0.0",
                "host_port": self.port.host_port, "port": self.port.port}


@dataclass(frozen=True)
class ConnectOptions:
    """Per-endpoint options of ``connect`` (the static ones apply to a single
    namespace only)."""

    ip: str | None = None
    ip6: str | None = None  # a static IPv6 address (Docker's --ip6)
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
