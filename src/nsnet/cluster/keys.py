"""The cluster's key layout in etcd (all values are JSON unless said).

Everything lives under one root, ``/nsnet/v1/`` by default (a different
root = a different cluster on the same etcd)::

  members/<host>                 {"advertise": IP, "joined": T}
      permanent: the host belongs to the cluster until it leaves or an
      operator forgets it.  Its blocks stay reserved while this key exists.
  alive/<host>                   {"advertise": IP}
      on the host's liveness lease (TTL): gone when the host stops renewing
      (dead, cut off) -- liveness is "this key exists".
  networks/<net>                 {"vni": N, "subnet": CIDR, "block": 26,
                                  "subnet6": CIDR, "block6": 120}
      one overlay network, cluster-wide; created by transaction together
      with vni/<N> (so neither name nor VNI is ever taken twice).  "subnet"
      is "" on an IPv6-only network; "subnet6"/"block6" only on one with IPv6.
  vni/<N as 8 digits>            <net>         the VNI -> network index
  vni-next                       <N>           where the next VNI search starts
  blocks/<net>/<addr>-<len>      {"host": H}   an address block's affinity
      (either family: 10.200.0.64-26, fd00:1::100-120)
  hostblocks/<host>/<net>/<addr>-<len>  ""     the same, indexed by host
      A host claims a block by transaction (the block key must be absent)
      and hands out addresses inside it locally, with no etcd round trip.
  endpoints/<net>/<host>/<ep>    {"ip", "ip6", "mac", "vtep", "host", "names"}
      ("ip" is "" on an IPv6-only network, "ip6" absent without IPv6)
      on the host's liveness lease: a dead host's endpoints vanish on their
      own within the TTL and every other host removes their FDB/neighbour
      entries; the host republishes them when it comes back (reconcile).

The rule for a dead host's addresses: its blocks keep their affinity as
long as ``members/<host>`` exists, alive or not, so no address of a host
that may come back is ever handed to anyone else.  They are released only
when the host leaves (``nsnet cluster leave``: it has no endpoints left) or
when an operator declares it gone (``forget``, refused while it is alive).

Watches are per network (``endpoints/<net>/``): a host follows only the
networks it has endpoints on, so its watch traffic does not grow with the
networks it does not use.
"""

from __future__ import annotations

import ipaddress
import re

DEFAULT_ROOT = "/nsnet/v1/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    """Host, network and endpoint names become key segments: no '/'."""
    from ..errors import InvalidInput

    if not _NAME.match(name):
        raise InvalidInput(f"{kind} name {name!r}: use 1-63 of A-Z a-z 0-9 _ . - "
                           "(starting with a letter or digit)")
    return name


class Keys:
    """Key names under one root."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root if root.endswith("/") else root + "/"

    def member(self, host: str) -> str:
        return f"{self.root}members/{host}"

    def members(self) -> str:
        return f"{self.root}members/"

    def alive(self, host: str) -> str:
        return f"{self.root}alive/{host}"

    def alives(self) -> str:
        return f"{self.root}alive/"

    def network(self, net: str) -> str:
        return f"{self.root}networks/{net}"

    def networks(self) -> str:
        return f"{self.root}networks/"

    def vni(self, vni: int) -> str:
        return f"{self.root}vni/{vni:08d}"

    def vni_next(self) -> str:
        return f"{self.root}vni-next"

    def block(self, net: str, block: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
        return f"{self.root}blocks/{net}/{block_segment(block)}"

    def blocks(self, net: str) -> str:
        return f"{self.root}blocks/{net}/"

    def host_block(self, host: str, net: str,
                   block: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
        return f"{self.root}hostblocks/{host}/{net}/{block_segment(block)}"

    def host_blocks(self, host: str, net: str = "") -> str:
        return f"{self.root}hostblocks/{host}/" + (f"{net}/" if net else "")

    def endpoint(self, net: str, host: str, ep: str) -> str:
        return f"{self.root}endpoints/{net}/{host}/{ep}"

    def endpoints(self, net: str, host: str = "") -> str:
        return f"{self.root}endpoints/{net}/" + (f"{host}/" if host else "")

    def last(self, key: str) -> str:
        return key.rsplit("/", 1)[1]


def block_segment(block: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{block.network_address}-{block.prefixlen}"


def parse_block(segment: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    addr, _, length = segment.rpartition("-")
    return ipaddress.ip_network(f"{addr}/{length}")
