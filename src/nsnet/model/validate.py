"""Input validation: every check raises InvalidInput with a one-line reason."""

from __future__ import annotations

import ipaddress
import re

from ..errors import InvalidInput

IFNAMSIZ = 16  # kernel limit including the NUL: names are at most 15 bytes
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


def validate_dns_name(name: str, what: str = "alias") -> str:
    """A host name DNS can carry: dot-separated labels of letters, digits,
    '-' and '_' (not at either end), at most 63 bytes each, 253 in all."""
    labels = name.rstrip(".").split(".") if name else [""]
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(f"{what} {name!r} is not a valid DNS name (labels of letters, "
                           "digits, '-' or '_', at most 63 characters each)")
    return name.rstrip(".").lower()


def validate_ifname(name: str, what: str = "interface name") -> str:
    """The kernel's dev_valid_name(), with the reason spelled out."""
    raw = name.encode()
    if not raw:
        raise InvalidInput(f"{what} must not be empty")
    if len(raw) >= IFNAMSIZ:
        raise InvalidInput(f"{what} {name!r} is {len(raw)} bytes; the kernel allows at most "
                           f"{IFNAMSIZ - 1}")
    if name in (".", ".."):
        raise InvalidInput(f"{what} {name!r} is not allowed")
    bad = [c for c in name if c in "/:" or c.isspace() or not c.isprintable()]
    if bad:
        raise InvalidInput(f"{what} {name!r} contains an illegal character {bad[0]!r} "
                           "(no '/', ':', spaces or control characters)")
    return name


def validate_netns_name(name: str) -> str:
    """Namespace names are file names under the netns directory."""
    if not name:
        raise InvalidInput("namespace name must not be empty")
    if name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidInput(f"namespace name {name!r} is not a valid file name "
                           "(no '/', '.', '..' or NUL)")
    if len(name.encode()) > 255:
        raise InvalidInput(f"namespace name {name[:20]!r}... is longer than 255 bytes")
    if not name.isprintable():
        raise InvalidInput(f"namespace name {name!r} contains control characters")
    return name


def validate_network_name(name: str) -> str:
    if not _NETWORK_NAME.match(name or ""):
        raise InvalidInput(f"network name {name!r} is invalid: use letters, digits, '_', '.', "
                           "'-', starting with a letter or digit")
    if len(name) > 64:
        raise InvalidInput(f"network name {name[:20]!r}... is longer than 64 characters")
    return name


def parse_subnet(text: str, what: str = "subnet") -> IPNetwork:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a CIDR (e.g. 172.16.0.0/16)") from None
    if "/" not in text:
        raise InvalidInput(f"{what} {text!r} needs a prefix length (e.g. {text}/24)")
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise InvalidInput(f"{what} {text!r} has host bits set; did you mean {net}?")
    return net


# IPv4 blocks that cannot be a bridge network's subnet (RFC 6890), with why.
# Link-local 169.254.0.0/16 is *not* here: a bridge network there works (the
# kernel routes and forwards it; AWS ECS puts its task bridge in
# 169.254.172.0/22), and one that would shadow a host route to it (cloud
# metadata) is already refused by the overlap check against the host's routes.
UNUSABLE_SUBNETS = tuple((ipaddress.IPv4Network(cidr), why) for cidr, why in (
    ("0.0.0.0/8", "'this network' (RFC 1122): not a destination"),
    ("127.0.0.0/8", "loopback: the host's own 127.0.0.0/8 services would be exposed "
     "(the embedded DNS would bind 127.0.0.1:53)"),
    ("224.0.0.0/4", "multicast: not unicast addresses"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4, with the limited broadcast "
     "255.255.255.255): the kernel does not route it"),
))


# IPv6 blocks that cannot be a bridge network's subnet, with why.  Docker's
# rule (libnetwork bridge validateIPv6Subnet) refuses IPv4-mapped addresses,
# multicast, and any subnet overlapping fe80::/64 other than fe80::/64 itself;
# nsnet refuses all of fe80::/10 (every interface, each bridge included,
# already has fe80::/64 on-link, so a network there is ambiguous across
# bridges) and the other special blocks of RFC 6890 that cannot carry
# unicast between hosts.  Docker sets no prefix-length limit, and neither
# does nsnet beyond "gateway + one endpoint" (at most a /126, see ipam);
# /64 is what hosts and tools expect (RFC 7421).
UNUSABLE_SUBNETS6 = tuple((ipaddress.IPv6Network(cidr), why) for cidr, why in (
    ("::/128", "the unspecified address: not a destination"),
    ("::1/128", "loopback: the host's own ::1 services would be exposed"),
    ("::ffff:0:0/96", "IPv4-mapped addresses: IPv4 traffic inside IPv6 sockets, never on "
     "the wire"),
    ("100::/64", "the discard-only prefix (RFC 6666)"),
    ("fe80::/10", "link-local: every interface already has fe80::/64 on-link, so a "
     "network there cannot be told apart from another bridge's"),
    ("ff00::/8", "multicast: not unicast addresses"),
))


def check_bridge_subnet(net: IPNetwork, what: str = "subnet") -> IPNetwork:
    """Refuse a subnet that cannot be a bridge network (see UNUSABLE_SUBNETS
    and UNUSABLE_SUBNETS6)."""
    table = UNUSABLE_SUBNETS if net.version == 4 else UNUSABLE_SUBNETS6
    for bad, why in table:
        if net.overlaps(bad):  # type: ignore[arg-type]
            raise InvalidInput(f"{what} {net} cannot be a bridge network: it overlaps "
                               f"{bad}, {why}")
    return net


IPV6_MODES = ("nat", "routed")


def validate_ipv6_mode(mode: str) -> str:
    """Docker's gateway_mode_ipv6: "nat" (the default since Docker 27:
    masquerade out, published ports DNATed from the host's addresses) or
    "routed" (no NAT: endpoints keep their own address, and only published
    container ports are reachable, directly)."""
    if mode not in IPV6_MODES:
        raise InvalidInput(f"IPv6 mode {mode!r} is not one of {', '.join(IPV6_MODES)}")
    return mode


def check_endpoint_ip6(ip: IPAddr, what: str = "--ip6") -> IPAddr:
    """An endpoint's IPv6 address must be a global or unique-local unicast one."""
    if ip.version != 6:
        raise InvalidInput(f"{what} {ip} is not an IPv6 address")
    check_bridge_subnet(ipaddress.ip_network(ip), what)
    return ip


def parse_ip(text: str, what: str = "address") -> IPAddr:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an IP address") from None


def validate_mac(text: str) -> str:
    if not _MAC.match(text or ""):
        raise InvalidInput(f"MAC address {text!r} is invalid (expected six hex pairs, "
                           "e.g. 02:42:ac:10:01:01)")
    mac = text.lower()
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"MAC address {text!r} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput("MAC address 00:00:00:00:00:00 is not allowed")
    return mac


def validate_mtu(mtu: int) -> int:
    if not 68 <= mtu <= 65535:
        raise InvalidInput(f"MTU {mtu} is out of range (68-65535)")
    return mtu


PROTOCOLS = ("tcp", "udp")
MAX_PORTS_PER_SPEC = 65535


def _port_range(text: str, what: str, spec: str) -> range:
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise InvalidInput(f"port spec {spec!r}: {what} {text!r} is not a port or a "
                           "range (e.g. 8080 or 8000-8010)") from None
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise InvalidInput(f"port spec {spec!r}: {what} {port} is out of range (1-65535)")
    if last < first:
        raise InvalidInput(f"port spec {spec!r}: {what} range {text!r} ends before it starts")
    return range(first, last + 1)


def _port_host_ip(text: str, spec: str, ipv6: bool) -> str:
    """The host address of a port spec, normalised: "" for every address of
    both families (no address, or 0.0.0.0 -- Docker: "0.0.0.0 means any IPv4
    or IPv6 address"), "::" for every IPv6 address only.

    ``[::1]`` is refused: IPv6 has no route_localnet, so the kernel never
    routes a ::1 source out of a bridge, and DNAT from the host's own ::1
    cannot reach an endpoint.  Docker serves it with docker-proxy (a process
    per port); nsnet has no per-port process and says so instead of
    publishing a port nobody can reach."""
    bracketed = text.startswith("[") and text.endswith("]")
    ip = parse_ip(text[1:-1] if bracketed else text, f"port spec {spec!r}: host address")
    if ip.version == 6 and not ipv6:
        raise InvalidInput(f"port spec {spec!r}: IPv6 host addresses are not supported yet")
    if ip.version == 6 and ip.is_loopback:
        raise InvalidInput(f"port spec {spec!r}: [::1] cannot be published: IPv6 has no "
                           "route_localnet, so the kernel cannot forward the host's own ::1 "
                           "connections to an endpoint; use 127.0.0.1, or a host address")
    if ip.version == 6 and (ip.is_multicast or ip.is_link_local
                            or getattr(ip, "ipv4_mapped", None)):
        raise InvalidInput(f"port spec {spec!r}: host address {ip} is not a unicast address "
                           "a port can be published on")
    if ip.is_unspecified:
        return "" if ip.version == 4 else "::"
    return str(ip)


def parse_port_spec(spec: str, ipv6: bool = False) -> list[tuple[str, str, int, int]]:
    """One ``[HOST_IP:]HOST_PORT[-END]:PORT[-END][/PROTO]`` -> (proto, host_ip,
    host_port, port) tuples, ranges expanded pairwise.  IPv6 host addresses
    (``[2001:db8::1]:8080:80``, ``[::]:8080:80``) only with ``ipv6``."""
    body, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidInput(f"port spec {spec!r}: unknown protocol {proto!r} (use tcp or udp)")
    host_ip, host_ports, ports = _split_port_spec(body, spec)
    if host_ip:
        host_ip = _port_host_ip(host_ip, spec, ipv6)
    inner = _port_range(ports, "port", spec)
    if not host_ports:  # Docker's `-p 80` / `-p IP::80`: 0 = an ephemeral host port
        return [(proto, host_ip, 0, p) for p in inner]
    outer = _port_range(host_ports, "host port", spec)
    if len(outer) != len(inner):
        raise InvalidInput(f"port spec {spec!r}: host range {host_ports} has {len(outer)} "
                           f"port(s) but {ports} has {len(inner)}; they must match")
    return [(proto, host_ip, h, p) for h, p in zip(outer, inner, strict=True)]


def _split_port_spec(body: str, spec: str) -> tuple[str, str, str]:
    parts = body.rsplit(":", 2)
    if len(parts) == 1 and parts[0]:
        return "", "", parts[0]
    if len(parts) == 2 and parts[0]:
        return "", parts[0], parts[1]
    if len(parts) == 3 and parts[0]:
        return parts[0], parts[1], parts[2]
    raise InvalidInput(f"port spec {spec!r} is not [[HOST_IP:]HOST_PORT[-END]:]PORT[-END]"
                       "[/tcp|/udp] (e.g. 8080:80, or 80 for an ephemeral host port)")


def parse_port_specs(specs: list[str] | tuple[str, ...],
                     ipv6: bool = False) -> list[tuple[str, str, int, int]]:
    return [t for spec in specs for t in parse_port_spec(spec, ipv6)]
