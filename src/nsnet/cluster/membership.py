"""Hosts of the cluster: join, liveness, status, leave, forget.

A host joins once: ``members/<host>`` (permanent) and ``alive/<host>`` on a
fresh lease of ``ttl`` seconds, in one transaction that fails if another
live host already uses the name.  Someone must renew the lease (the
overlay agent does, every ttl/3); when renewals stop, etcd deletes
``alive/<host>`` and every endpoint record on that lease.  The local side
of membership -- which store, which name, which lease -- is a small JSON
file in the host's state directory (:class:`ClusterConfig`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass, field

from ..errors import Conflict, InvalidInput, NotFound
from .keys import Keys, check_name, parse_block
from .store import Delete, Get, MemberHealth, Put, Store, StoreConfig, absent

CONFIG_FILE = "cluster.json"
DEFAULT_TTL = 10


@dataclass
class ClusterConfig:
    """This host's membership, as kept in STATE_DIR/cluster.json."""

    store: str  # etcd://H:P,...
    host: str
    advertise: str
    lease: int = 0
    ttl: int = DEFAULT_TTL
    root: str = "/nsnet/v1/"
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    @staticmethod
    def path(state_dir: str) -> str:
        return os.path.join(state_dir, CONFIG_FILE)

    @classmethod
    def load(cls, state_dir: str) -> ClusterConfig:
        try:
            with open(cls.path(state_dir)) as f:
                return cls(**json.load(f))
        except FileNotFoundError:
            raise NotFound("this host has not joined a cluster (nsnet cluster join)") from None

    def save(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        tmp = self.path(state_dir) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(state_dir))

    @staticmethod
    def remove(state_dir: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ClusterConfig.path(state_dir))


@dataclass(frozen=True)
class HostStatus:
    name: str
    advertise: str
    alive: bool
    endpoints: int


@dataclass
class ClusterStatus:
    store: str
    members: list[MemberHealth]
    hosts: list[HostStatus] = field(default_factory=list)

    @property
    def quorum(self) -> bool:
        return sum(m.healthy for m in self.members) * 2 > len(self.members)


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def join(store: Store, host: str, advertise: str, ttl: int = DEFAULT_TTL,
         keys: Keys | None = None, old_lease: int = 0) -> int:
    """Register ``host`` (reachable at the underlay address ``advertise``);
    returns its liveness lease.  Re-joining under the same name is allowed
    when the name is not alive, or alive with this host's ``old_lease``."""
    keys = keys or Keys()
    check_name("host", host)
    try:
        ipaddress.IPv4Address(advertise)
    except ValueError:
        raise InvalidInput(f"--advertise {advertise!r}: an IPv4 underlay address") from None
    if not 2 <= ttl <= 3600:
        raise InvalidInput(f"lease TTL {ttl}: 2-3600 seconds")
    lease = store.lease_grant(ttl)
    member = _json({"advertise": advertise, "joined": int(time.time())})
    alive = _json({"advertise": advertise})
    guard = [absent(keys.alive(host))]
    ops = [Put(keys.member(host), member), Put(keys.alive(host), alive, lease)]
    result = store.txn(guard, ops, [Get(keys.alive(host))])
    if result.succeeded:
        return lease
    current = result.gets[0]
    store.lease_revoke(lease)
    if current is not None and old_lease and current.lease == old_lease:
        return old_lease  # our own registration, still alive: keep it (and its records)
    where = current.json().get("advertise", "?") if current else "?"
    raise Conflict(f"host name {host!r} is already alive in cluster {store.name} "
                   f"(advertising {where}); pick another --name or wait for its lease to expire")


def renew(store: Store, host: str, lease: int, advertise: str,
          keys: Keys | None = None) -> tuple[int, bool]:
    """Keep the liveness lease; if it already expired, register again.
    Returns (lease, renewed); ``renewed`` False means a new lease was made
    and the caller must republish its endpoints on it."""
    if lease and store.lease_keepalive(lease) > 0:
        return lease, True
    return join(store, host, advertise, keys=keys), False


def leave(store: Store, host: str, lease: int, keys: Keys | None = None,
          force: bool = False) -> None:
    """Leave the cluster: refuse while this host still has endpoint records
    (unless ``force``), then revoke its lease (its alive key and records go)
    and release its address blocks and membership."""
    keys = keys or Keys()
    _release(store, host, keys, force=force)
    if lease:
        store.lease_revoke(lease)


def forget(store: Store, host: str, keys: Keys | None = None) -> None:
    """Declare a dead host gone: its blocks are released for others.
    Refused while it is alive (its lease still renewed)."""
    keys = keys or Keys()
    if store.get(keys.alive(host)) is not None:
        raise Conflict(f"host {host!r} is alive in cluster {store.name}: it must leave itself")
    if store.get(keys.member(host)) is None:
        raise NotFound(f"host {host!r} is not a member of cluster {store.name}")
    _release(store, host, keys, force=True)


def _release(store: Store, host: str, keys: Keys, force: bool) -> None:
    networks, _ = store.get_prefix(keys.networks())
    mine = []
    for net in networks:
        records, _ = store.get_prefix(keys.endpoints(keys.last(net.key), host),
                                      keys_only=True)
        mine += records
    if mine and not force:
        raise Conflict(f"host {host!r} still has {len(mine)} endpoint(s) on the overlay: "
                       "disconnect them first (or force)")
    hostblocks, _ = store.get_prefix(keys.host_blocks(host), keys_only=True)
    ops: list = [Delete(kv.key) for kv in mine]
    for kv in hostblocks:
        net, segment = kv.key.rsplit("/", 2)[-2:]
        ops += [Delete(keys.block(net, parse_block(segment))), Delete(kv.key)]
    ops.append(Delete(keys.member(host)))
    store.txn([], ops)


def status(store: Store, keys: Keys | None = None) -> ClusterStatus:
    """Members of the store, hosts with liveness and endpoint counts."""
    keys = keys or Keys()
    health = store.health()
    out = ClusterStatus(store.name, health)
    if not out.quorum:
        return out
    members, _ = store.get_prefix(keys.members())
    alive, _ = store.get_prefix(keys.alives(), keys_only=True)
    alive_names = {keys.last(kv.key) for kv in alive}
    counts: dict[str, int] = {}
    networks, _ = store.get_prefix(keys.networks())
    for net in networks:
        records, _ = store.get_prefix(keys.endpoints(keys.last(net.key)), keys_only=True)
        for kv in records:
            host = kv.key.rsplit("/", 2)[-2]
            counts[host] = counts.get(host, 0) + 1
    for kv in members:
        name = keys.last(kv.key)
        out.hosts.append(HostStatus(name, kv.json().get("advertise", ""), name in alive_names,
                                    counts.get(name, 0)))
    return out


def open_store(config: ClusterConfig | StoreConfig, timeout: float = 5.0) -> Store:
    from .store import EtcdStore, parse_store_url

    if isinstance(config, ClusterConfig):
        config = parse_store_url(config.store, config.ca_cert, config.cert, config.key, timeout)
    return EtcdStore(config)
