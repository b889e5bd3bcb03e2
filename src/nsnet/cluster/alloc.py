"""Cluster-wide allocation: overlay networks with their VNI, address blocks.

Both go through etcd transactions whose guard is "the key is absent", so
two hosts racing for the same name, VNI or block cannot both win; the loser
re-reads and tries the next candidate.

VNIs: ``vni-next`` remembers where to look, so creating a network costs one
transaction, not a scan of every VNI in use (after a wrap-around, taken
VNIs are skipped one transaction each).  The range starts at 4096, as
Docker's overlay driver does, leaving the low VNIs to hand-made devices.

Addresses: a network's subnet is cut into blocks (a /26 by default).  A
host claims a whole block by transaction (Calico's block affinity) and
hands out addresses inside its blocks without asking etcd; one claim per
block_size addresses.  The network address, the first host address (kept
for a gateway) and the broadcast address of the subnet are never handed
out.  Which addresses of its blocks are in use is the host's own state
(its SQLite store), passed in as ``used``.

IPv6 (#16): a dual-stack or IPv6-only network has a second subnet, cut
the same way into /120 blocks (256 addresses, as many claims per endpoint
as a /26 costs on IPv4's side -- fewer), claimed with the same
transactions under the same keys (``blocks/<net>/fd00::100-120``: the
family is in the address, so one prefix read still lists every block and
``release_host_blocks``/``delete_network`` stay family-blind).  The v6
blocks are taken from the subnet's first /96 only (the whole subnet when
it is smaller): every v6 address handed out then differs from the others
of its network in its low 32 bits, which is what an IPv6-only network's
MACs are made of (02:42 + those 32 bits, :func:`nsnet.engine.overlay.
overlay_mac`), so its MACs are unique within the network (the FDB and
neighbour tables they go into are per network: per VXLAN device).  A
dual-stack endpoint takes its MAC from its IPv4 address, as before.  The
subnet's network address (the subnet-router anycast) and its first
address (the gateway) are never handed out.  Why blocks and not a
v6 address derived from the v4 one: an IPv6-only network needs blocks
anyway, and ``--ip6`` must claim an address on its own.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, PoolExhausted
from .keys import Keys, check_name, parse_block
from .store import KV, Compare, Delete, Get, Put, Store, absent, unchanged

VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
DEFAULT_BLOCK = 26
DEFAULT_BLOCK6 = 120
V6_SPAN = 96  # v6 addresses come from the subnet's first /96: low 32 bits unique
MAX_TRIES = 64

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class OverlayNetwork:
    name: str
    vni: int
    subnet: ipaddress.IPv4Network | None  # None: an IPv6-only network
    block: int  # prefix length of one address block
    # the network's options every host applies alike (internal, icc,
    # masquerade, dns): the overlay driver's, opaque here
    options: tuple[tuple[str, object], ...] = ()
    # the id of the local network whose create made it (a host's own uuid):
    # that create's rollback, after a crash, removes only a network it made
    creator: str = ""
    subnet6: ipaddress.IPv6Network | None = None  # #16: dual-stack or IPv6-only
    block6: int = DEFAULT_BLOCK6

    def record(self) -> bytes:
        d: dict[str, object] = {"vni": self.vni, "subnet": str(self.subnet or ""),
                                "block": self.block, "options": dict(self.options),
                                "creator": self.creator}
        if self.subnet6 is not None:  # absent on IPv4-only networks: records as before
            d.update(subnet6=str(self.subnet6), block6=self.block6)
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_kv(cls, name: str, kv: KV) -> OverlayNetwork:
        d = kv.json()
        v6 = d.get("subnet6")
        return cls(name, int(d["vni"]), ipaddress.IPv4Network(d["subnet"]) if d["subnet"]
                   else None, int(d["block"]), tuple(sorted(d.get("options", {}).items())),
                   str(d.get("creator", "")), ipaddress.IPv6Network(v6) if v6 else None,
                   int(d.get("block6", DEFAULT_BLOCK6)))

    def subnet_of(self, version: int) -> Subnet | None:
        return self.subnet if version == 4 else self.subnet6

    def block_of(self, version: int) -> int:
        return self.block if version == 4 else self.block6

    def span(self, version: int) -> Subnet:
        """Where addresses of that family are handed out: the IPv4 subnet;
        the IPv6 subnet's first /96 (see the module's doc)."""
        subnet = self.subnet_of(version)
        if subnet is None:
            raise InvalidInput(f"overlay network {self.name!r} has no IPv{version} subnet")
        if version == 6 and subnet.prefixlen < V6_SPAN:
            return next(subnet.subnets(new_prefix=V6_SPAN))
        return subnet

    def reserved_of(self, version: int) -> set[Address]:
        s = self.subnet_of(version)
        if s is None:
            return set()
        out = {s.network_address, s.network_address + 1}
        return out | {s.broadcast_address} if version == 4 else out

    @property
    def reserved(self) -> set[Address]:
        return self.reserved_of(4)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        assert self.subnet is not None
        return self.subnet.network_address + 1

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        assert self.subnet6 is not None
        return self.subnet6.network_address + 1

    @property
    def subnets(self) -> tuple[Subnet, ...]:
        return tuple(s for s in (self.subnet, self.subnet6) if s is not None)


def _check_subnet(subnet: str, block: int) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise InvalidInput(f"--subnet {subnet!r}: {exc}") from None
    if net.prefixlen > 29:
        raise InvalidInput(f"--subnet {subnet}: an overlay needs at least a /29")
    if not net.prefixlen <= block <= 30:
        raise InvalidInput(f"address block /{block} does not fit in {subnet} "
                           f"(/{net.prefixlen}-/30)")
    return net


def _check_subnet6(subnet: str, block: int) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(subnet)
    except ValueError as exc:
        raise InvalidInput(f"--subnet {subnet!r}: {exc}") from None
    if net.prefixlen > 120:
        raise InvalidInput(f"--subnet {subnet}: an overlay needs at least an IPv6 /120")
    if not max(net.prefixlen, V6_SPAN) <= block <= 126:
        raise InvalidInput(f"address block /{block} does not fit in {subnet} "
                           f"(/{max(net.prefixlen, V6_SPAN)}-/126)")
    return net


def create_network(store: Store, name: str, subnet: str | None, block: int = DEFAULT_BLOCK,
                   keys: Keys | None = None,
                   options: dict[str, object] | None = None,
                   creator: str = "", subnet6: str | None = None,
                   block6: int = DEFAULT_BLOCK6) -> OverlayNetwork:
    """Create an overlay network for the whole cluster, with a fresh VNI.
    Its subnets (IPv4, IPv6 or both) must not overlap another overlay
    network's.  ``creator`` (the creating host's id for it) is kept in the
    record: see :func:`delete_network`."""
    keys = keys or Keys()
    check_name("network", name)
    if not subnet and not subnet6:
        raise InvalidInput(f"overlay network {name!r} needs an IPv4 or an IPv6 subnet")
    net = _check_subnet(subnet, block) if subnet else None
    net6 = _check_subnet6(subnet6, block6) if subnet6 else None
    mine = [s for s in (net, net6) if s is not None]
    existing, _ = store.get_prefix(keys.networks())  # once per network create
    for kv in existing:
        other = OverlayNetwork.from_kv(keys.last(kv.key), kv)
        if other.name == name:
            raise AlreadyExists(f"overlay network {name!r} exists (VNI {other.vni})")
        for theirs in other.subnets:
            for s in mine:
                if s.version == theirs.version and theirs.overlaps(s):  # type: ignore[arg-type]
                    raise Conflict(f"subnet {s} overlaps overlay network {other.name!r} "
                                   f"({theirs})")
    for _ in range(MAX_TRIES):
        counter = store.get(keys.vni_next())
        vni = int(counter.value) if counter else VNI_FIRST
        if vni > VNI_LAST:
            vni = VNI_FIRST
        network = OverlayNetwork(name, vni, net, block, tuple(sorted((options or {}).items())),
                                 creator, net6, block6)
        guard: list[Compare] = [absent(keys.network(name)), absent(keys.vni(vni)),
                                unchanged(counter) if counter else absent(keys.vni_next())]
        ops = [Put(keys.network(name), network.record()), Put(keys.vni(vni), name.encode()),
               Put(keys.vni_next(), str(vni + 1).encode())]
        result = store.txn(guard, ops, [Get(keys.network(name)), Get(keys.vni(vni))])
        if result.succeeded:
            return network
        taken_name, taken_vni = result.gets
        if taken_name is not None:
            raise AlreadyExists(f"overlay network {name!r} exists (made concurrently)")
        if taken_vni is not None:  # after a wrap-around: move the counter past it
            store.txn([unchanged(counter)] if counter else [absent(keys.vni_next())],
                      [Put(keys.vni_next(), str(vni + 1).encode())])
    raise Conflict(f"could not allocate a VNI for {name!r} after {MAX_TRIES} tries "
                   f"(cluster store {store.name} too busy?)")


def get_network(store: Store, name: str, keys: Keys | None = None) -> OverlayNetwork:
    keys = keys or Keys()
    kv = store.get(keys.network(name))
    if kv is None:
        raise NotFound(f"overlay network {name!r} not found in cluster store {store.name}")
    return OverlayNetwork.from_kv(name, kv)


def delete_network(store: Store, name: str, keys: Keys | None = None,
                   creator: str | None = None) -> bool:
    """Remove a network with no endpoints left anywhere; frees its VNI and
    every block (on every host) in one transaction.  With ``creator``: only
    if that create made it (a crashed create's rollback), else nothing is
    done.  Returns whether it was removed."""
    keys = keys or Keys()
    kv = store.get(keys.network(name))
    if kv is None:
        raise NotFound(f"overlay network {name!r} not found in cluster store {store.name}")
    network = OverlayNetwork.from_kv(name, kv)
    if creator is not None and network.creator != creator:
        return False
    records, _ = store.get_prefix(keys.endpoints(name), keys_only=True)
    if records:
        hosts = sorted({kv.key.rsplit("/", 2)[-2] for kv in records})
        raise Conflict(f"overlay network {name!r} still has {len(records)} endpoint(s) "
                       f"on {', '.join(hosts)}")
    blocks, _ = store.get_prefix(keys.blocks(name))
    ops: list = [Delete(keys.network(name)), Delete(keys.vni(network.vni)),
                 Delete(keys.blocks(name), prefix=True)]
    for kv in blocks:
        host = json.loads(kv.value)["host"]
        ops.append(Delete(keys.host_block(host, name, parse_block(keys.last(kv.key)))))
    # guarded: a network removed and made again meanwhile is not this one
    return store.txn([unchanged(kv)], ops).succeeded


def release_host_blocks(store: Store, name: str, host: str,
                        keys: Keys | None = None) -> int:
    """Give up ``host``'s blocks of network ``name`` (it removed the network
    locally: no endpoint of it is left there), in one transaction; returns
    how many.  A block is only deleted while it is still ``host``'s."""
    keys = keys or Keys()
    kvs, _ = store.get_prefix(keys.host_blocks(host, name), keys_only=True)
    ops: list = []
    guard: list[Compare] = []
    for kv in kvs:
        block = parse_block(keys.last(kv.key))
        owner = store.get(keys.block(name, block))
        if owner is not None and owner.json().get("host") == host:
            guard.append(unchanged(owner))
            ops.append(Delete(keys.block(name, block)))
        ops.append(Delete(kv.key))
    if ops:
        store.txn(guard, ops)
    return len(kvs)


def host_blocks(store: Store, network: OverlayNetwork, host: str,
                keys: Keys | None = None) -> list[Subnet]:
    """The blocks ``host`` holds in ``network``, of both families (its own
    index: no scan)."""
    keys = keys or Keys()
    kvs, _ = store.get_prefix(keys.host_blocks(host, network.name), keys_only=True)
    return sorted((parse_block(keys.last(kv.key)) for kv in kvs),
                  key=lambda b: (b.version, b))


def _claim(store: Store, network: OverlayNetwork, host: str, block: Subnet,
           keys: Keys) -> bool:
    """One transaction: ``block`` becomes ``host``'s if no one holds it."""
    value = json.dumps({"host": host}).encode()
    return store.txn([absent(keys.block(network.name, block))],
                     [Put(keys.block(network.name, block), value),
                      Put(keys.host_block(host, network.name, block), b"")]).succeeded


def claim_block(store: Store, network: OverlayNetwork, host: str,
                keys: Keys | None = None, version: int = 4) -> Subnet:
    """Claim the first free block of ``network``'s IPv``version`` span for
    ``host``."""
    keys = keys or Keys()
    span, size = network.span(version), network.block_of(version)
    for _ in range(MAX_TRIES):
        taken_kvs, _ = store.get_prefix(keys.blocks(network.name), keys_only=True)
        taken = {keys.last(kv.key) for kv in taken_kvs}
        # lazy: an IPv6 span holds 2**24 blocks, the first free one is near
        block = next((b for b in span.subnets(new_prefix=size)
                      if f"{b.network_address}-{b.prefixlen}" not in taken), None)
        if block is None:
            raise PoolExhausted(f"overlay network {network.name!r}: every /{size} "
                                f"block of {span} is claimed")
        if _claim(store, network, host, block, keys):
            return block
    raise Conflict(f"could not claim a block of {network.name!r} after {MAX_TRIES} tries")


def claim_address(store: Store, network: OverlayNetwork, host: str,
                  ip: Address, keys: Keys | None = None) -> Subnet:
    """A static address (``connect --ip``/``--ip6``) for ``host``: its block
    is the host's already, or claimed for it here by transaction; refused
    (naming the holder) when another host holds that block -- alive or not:
    a dead member's addresses are its own until it is declared gone.
    Returns the block."""
    keys = keys or Keys()
    v = ip.version
    flag = "--ip" if v == 4 else "--ip6"
    subnet = network.subnet_of(v)
    if subnet is None or ip not in network.span(v) or ip in network.reserved_of(v):
        where = (f"{subnet}, gateway {subnet.network_address + 1}" if subnet else
                 f"no IPv{v} subnet")
        if v == 6 and subnet is not None and ip in subnet:
            where += f"; IPv6 addresses are handed out from {network.span(6)} only"
        raise InvalidInput(f"{flag} {ip}: not a host address of overlay network "
                           f"{network.name!r} ({where})")
    block = ipaddress.ip_network(f"{ip}/{network.block_of(v)}", strict=False)
    for _ in range(MAX_TRIES):
        owner = store.get(keys.block(network.name, block))
        if owner is not None:
            holder = owner.json().get("host", "")
            if holder != host:
                raise Conflict(f"{flag} {ip}: address block {block} of overlay network "
                               f"{network.name!r} belongs to host {holder!r}; pick an "
                               "address of a block this host holds or no one does")
            return block
        if _claim(store, network, host, block, keys):
            return block
    raise Conflict(f"could not claim block {block} of {network.name!r} after {MAX_TRIES} "
                   "tries")


def free_in_blocks(network: OverlayNetwork, blocks: Iterable[Subnet],
                   used: set) -> Address | None:
    """The first address of ``blocks`` neither used nor reserved (pure;
    the blocks are of one family)."""
    for block in blocks:
        reserved = network.reserved_of(block.version)
        for ip in block:
            if ip not in used and ip not in reserved:
                return ip
    return None


class BlockAllocator:
    """Addresses for one host on one overlay network, of either family:
    local while its blocks have room, one transaction per new block (the
    host's blocks of both families are read once)."""

    def __init__(self, store: Store, network: OverlayNetwork, host: str,
                 keys: Keys | None = None) -> None:
        self.store, self.network, self.host = store, network, host
        self.keys = keys or Keys()
        self.blocks: list[Subnet] | None = None  # read on first use
        # per block, where the last address was found: the next search
        # starts there (a connect of N endpoints scanned its blocks from
        # their start N times); a full scan still runs before a new block
        # is claimed, so an address freed behind it is not missed
        self._next: dict[Subnet, int] = {}

    def allocate(self, used: set, version: int = 4) -> Address:
        if self.blocks is None:
            self.blocks = host_blocks(self.store, self.network, self.host, self.keys)
        span = self.network.span(version)
        mine = [b for b in self.blocks if b.version == version and b.subnet_of(span)]
        ip = self._scan(mine, used, resume=True)
        if ip is None:
            ip = self._scan(mine, used, resume=False)
        while ip is None:
            block = claim_block(self.store, self.network, self.host, self.keys, version)
            self.blocks.append(block)
            ip = self._scan([block], used, resume=True)
        return ip

    def _scan(self, blocks: list[Subnet], used: set, resume: bool) -> Address | None:
        """The first address of ``blocks`` neither used nor reserved, from
        each block's cursor (``resume``) or its start."""
        for block in blocks:
            reserved = self.network.reserved_of(block.version)
            base = block.network_address
            for i in range(self._next.get(block, 0) if resume else 0, block.num_addresses):
                ip = base + i
                if ip not in used and ip not in reserved:
                    self._next[block] = i + 1
                    return ip
        return None
