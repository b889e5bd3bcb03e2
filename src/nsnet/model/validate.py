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
