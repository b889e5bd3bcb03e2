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
MAX_TRIES = 64


@dataclass(frozen=True)
class OverlayNetwork:
    name: str
    vni: int
    subnet: ipaddress.IPv4Network
    block: int  # prefix length of one address block
    # the network's options every host applies alike (internal, icc,
    # masquerade, dns): the overlay driver's, opaque here
    options: tuple[tuple[str, object], ...] = ()
    # the id of the local network whose create made it (a host's own uuid):
    # that create's rollback, after a crash, removes only a network it made
    creator: str = ""

    def record(self) -> bytes:
        return json.dumps({"vni": self.vni, "subnet": str(self.subnet), "block": self.block,
                           "options": dict(self.options), "creator": self.creator},
                          sort_keys=True).encode()

    @classmethod
    def from_kv(cls, name: str, kv: KV) -> OverlayNetwork:
        d = kv.json()
        return cls(name, int(d["vni"]), ipaddress.IPv4Network(d["subnet"]), int(d["block"]),
                   tuple(sorted(d.get("options", {}).items())), str(d.get("creator", "")))

    @property
    def reserved(self) -> set[ipaddress.IPv4Address]:
        s = self.subnet
        return {s.network_address, s.network_address + 1, s.broadcast_address}

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1


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


def create_network(store: Store, name: str, subnet: str, block: int = DEFAULT_BLOCK,
                   keys: Keys | None = None,
                   options: dict[str, object] | None = None,
                   creator: str = "") -> OverlayNetwork:
    """Create an overlay network for the whole cluster, with a fresh VNI.
    Its subnet must not overlap another overlay network's.  ``creator``
    (the creating host's id for it) is kept in the record: see
    :func:`delete_network`."""
    keys = keys or Keys()
    check_name("network", name)
    net = _check_subnet(subnet, block)
    existing, _ = store.get_prefix(keys.networks())  # once per network create
    for kv in existing:
        other = OverlayNetwork.from_kv(keys.last(kv.key), kv)
        if other.name == name:
            raise AlreadyExists(f"overlay network {name!r} exists (VNI {other.vni})")
        if other.subnet.overlaps(net):
            raise Conflict(f"subnet {net} overlaps overlay network {other.name!r} "
                           f"({other.subnet})")
    for _ in range(MAX_TRIES):
        counter = store.get(keys.vni_next())
        vni = int(counter.value) if counter else VNI_FIRST
        if vni > VNI_LAST:
            vni = VNI_FIRST
        network = OverlayNetwork(name, vni, net, block, tuple(sorted((options or {}).items())),
                                 creator)
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
                keys: Keys | None = None) -> list[ipaddress.IPv4Network]:
    """The blocks ``host`` holds in ``network`` (its own index: no scan)."""
    keys = keys or Keys()
    kvs, _ = store.get_prefix(keys.host_blocks(host, network.name), keys_only=True)
    return sorted(parse_block(keys.last(kv.key)) for kv in kvs)  # type: ignore[misc]


def claim_block(store: Store, network: OverlayNetwork, host: str,
                keys: Keys | None = None) -> ipaddress.IPv4Network:
    """Claim the first free block of ``network`` for ``host``."""
    keys = keys or Keys()
    for _ in range(MAX_TRIES):
        taken_kvs, _ = store.get_prefix(keys.blocks(network.name), keys_only=True)
        taken = {keys.last(kv.key) for kv in taken_kvs}
        block = next((b for b in network.subnet.subnets(new_prefix=network.block)
                      if f"{b.network_address}-{b.prefixlen}" not in taken), None)
        if block is None:
            raise PoolExhausted(f"overlay network {network.name!r}: every /{network.block} "
                                f"block of {network.subnet} is claimed")
        value = json.dumps({"host": host}).encode()
        result = store.txn([absent(keys.block(network.name, block))],
                           [Put(keys.block(network.name, block), value),
                            Put(keys.host_block(host, network.name, block), b"")])
        if result.succeeded:
            return block
    raise Conflict(f"could not claim a block of {network.name!r} after {MAX_TRIES} tries")


def claim_address(store: Store, network: OverlayNetwork, host: str,
                  ip: ipaddress.IPv4Address, keys: Keys | None = None) -> ipaddress.IPv4Network:
    """A static address (``connect --ip``) for ``host``: its block is the
    host's already, or claimed for it here by transaction; refused (naming
    the holder) when another host holds that block -- alive or not: a dead
    member's addresses are its own until it is declared gone.  Returns the
    block."""
    keys = keys or Keys()
    if ip not in network.subnet or ip in network.reserved:
        raise InvalidInput(f"--ip {ip}: not a host address of overlay network "
                           f"{network.name!r} ({network.subnet}, gateway {network.gateway})")
    block = ipaddress.ip_network(f"{ip}/{network.block}", strict=False)
    for _ in range(MAX_TRIES):
        owner = store.get(keys.block(network.name, block))
        if owner is not None:
            holder = owner.json().get("host", "")
            if holder != host:
                raise Conflict(f"--ip {ip}: address block {block} of overlay network "
                               f"{network.name!r} belongs to host {holder!r}; pick an "
                               "address of a block this host holds or no one does")
            return block  # type: ignore[return-value]
        value = json.dumps({"host": host}).encode()
        result = store.txn([absent(keys.block(network.name, block))],
                           [Put(keys.block(network.name, block), value),
                            Put(keys.host_block(host, network.name, block), b"")])
        if result.succeeded:
            return block  # type: ignore[return-value]
    raise Conflict(f"could not claim block {block} of {network.name!r} after {MAX_TRIES} "
                   "tries")


def free_in_blocks(network: OverlayNetwork, blocks: Iterable[ipaddress.IPv4Network],
                   used: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address | None:
    """The first address of ``blocks`` neither used nor reserved (pure)."""
    reserved = network.reserved
    for block in blocks:
        for ip in block:
            if ip not in used and ip not in reserved:
                return ip
    return None


class BlockAllocator:
    """Addresses for one host on one overlay network: local while its
    blocks have room, one transaction per new block."""

    def __init__(self, store: Store, network: OverlayNetwork, host: str,
                 keys: Keys | None = None) -> None:
        self.store, self.network, self.host = store, network, host
        self.keys = keys or Keys()
        self.blocks: list[ipaddress.IPv4Network] | None = None  # read on first use

    def allocate(self, used: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
        if self.blocks is None:
            self.blocks = host_blocks(self.store, self.network, self.host, self.keys)
        ip = free_in_blocks(self.network, self.blocks, used)
        while ip is None:
            self.blocks.append(claim_block(self.store, self.network, self.host, self.keys))
            ip = free_in_blocks(self.network, self.blocks[-1:], used)
        return ip
