"""The host's unique-local IPv6 pool (RFC 4193), pure.

A network created with ``--ipv6`` and no IPv6 subnet gets a /64 out of
``fdXX:XXXX:XXXX::/48``, where the 40 bits XX... are the host's *global
ID*: random, generated once per state directory and stored (the state
store's meta table), so the prefix is stable across restarts and unlikely
(RFC 4193 3.2.3) to collide with another host's when networks are joined.
Docker picks from a fixed ``fd00::/8`` pool with no per-host randomness;
nsnet follows the RFC instead.

:func:`pick_subnet` hands out the lowest /64 of the /48 that overlaps no
IPv6 subnet already taken (other nsnet networks, and whatever else the
caller passes, e.g. the host's routes).  Its cost depends on the taken
subnets inside the /48, never on the 65,536 /64s it holds.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from ..errors import InvalidInput, PoolExhausted

__all__ = ["GLOBAL_ID_BITS", "new_global_id", "parse_global_id", "pick_subnet", "ula_prefix"]

GLOBAL_ID_BITS = 40
_ULA = ipaddress.IPv6Network("fd00::/8")  # L = 1: locally assigned (RFC 4193 3.1)
_SUBNETS = 1 << 16  # /64s in a /48


def new_global_id() -> str:
    """A fresh random 40-bit global ID, as 10 hex digits."""
    return f"{secrets.randbits(GLOBAL_ID_BITS):010x}"


def parse_global_id(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if len(text) != 10 or not 0 <= value < 1 << GLOBAL_ID_BITS:
        raise InvalidInput(f"ULA global ID {text!r} is not 40 bits of hex (10 digits)")
    return value


def ula_prefix(global_id: str) -> ipaddress.IPv6Network:
    """The host's /48: fd00::/8 + the 40-bit global ID."""
    gid = parse_global_id(global_id)
    base = int(_ULA.network_address) | (gid << 80)
    return ipaddress.IPv6Network((base, 48))


def pick_subnet(global_id: str, taken: Iterable[str | ipaddress.IPv6Network]
                ) -> ipaddress.IPv6Network:
    """The lowest /64 of the host's /48 overlapping none of ``taken``."""
    prefix = ula_prefix(global_id)
    base = int(prefix.network_address)
    blocked: list[tuple[int, int]] = []  # [first, last] subnet IDs, inclusive
    for item in taken:
        net = ipaddress.ip_network(item) if isinstance(item, str) else item
        if net.version != 6 or not net.overlaps(prefix):
            continue
        if net.prefixlen <= 48:
            raise PoolExhausted(f"the host's unique-local prefix {prefix} lies inside "
                                f"{net}, which is taken")
        first = (int(net.network_address) - base) >> 64
        span = 1 << max(0, 64 - net.prefixlen)
        blocked.append((first, first + span - 1))
    candidate = 0
    for first, last in sorted(blocked):
        if candidate < first:
            break
        candidate = max(candidate, last + 1)
    if candidate >= _SUBNETS:
        raise PoolExhausted(f"every /64 of the host's unique-local prefix {prefix} is taken")
    return ipaddress.IPv6Network((base + (candidate << 64), 64))
