"""The endpoint registry and its convergence into FDB/neighbour entries.

Each host publishes one record per endpoint it holds on an overlay network
(``endpoints/<net>/<host>/<ep>`` = IP, IPv6 address, MAC, the host's VTEP),
on its liveness lease.  Every host with that network watches the prefix and
keeps its VXLAN device's static FDB entries (MAC -> VTEP) and permanent
neighbour entries (IP -> MAC, of each family the endpoint has: the device's
``proxy`` flag answers ARP and NDP from them) equal to the records of the
*other* hosts.  A record without "ip6" (IPv4-only, or written before #16)
reads as before; an IPv6-only endpoint's has "ip": "".

Split as the rest of nsnet: :func:`desired_entries` is a pure function of
the records; :class:`VxlanApplier` diffs desired against what it programmed
and sends the difference as one netlink batch; :class:`RegistryWatcher`
feeds one from the other (list, then watch from the listed revision; a
reset -- compacted history -- lists again).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import InvalidInput
from .keys import Keys, check_name
from .store import KV, Event, Put, Store


@dataclass(frozen=True)
class EndpointRecord:
    network: str
    host: str
    name: str
    ip: str
    mac: str
    vtep: str
    names: tuple[str, ...] = ()  # DNS names (namespace, aliases): other hosts' DNS serves them
    ip6: str = ""  # its IPv6 address (#16), "" if it has none

    @property
    def ips(self) -> tuple[str, ...]:
        """Its addresses, IPv4 first."""
        return tuple(a for a in (self.ip, self.ip6) if a)

    def value(self) -> bytes:
        d: dict[str, object] = {"ip": self.ip, "mac": self.mac, "vtep": self.vtep,
                                "host": self.host}
        if self.names:
            d["names"] = list(self.names)
        if self.ip6:
            d["ip6"] = self.ip6
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_kv(cls, keys: Keys, kv: KV) -> EndpointRecord:
        net, host, name = kv.key[len(keys.root) + len("endpoints/"):].split("/")
        d = json.loads(kv.value)
        return cls(net, host, name, d.get("ip", ""), d["mac"], d["vtep"],
                   tuple(str(n) for n in d.get("names", ())), d.get("ip6", ""))


def _check_record(rec: EndpointRecord) -> None:
    for kind, value in (("network", rec.network), ("host", rec.host), ("endpoint", rec.name)):
        check_name(kind, value)
    if not rec.ip and not rec.ip6:
        raise InvalidInput(f"endpoint {rec.name}: no address")
    try:
        if rec.ip:
            ipaddress.IPv4Address(rec.ip)
        if rec.ip6:
            ipaddress.IPv6Address(rec.ip6)
        ipaddress.IPv4Address(rec.vtep)  # the underlay is IPv4
    except ValueError as exc:
        raise InvalidInput(f"endpoint {rec.name}: {exc}") from None
    parts = rec.mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise InvalidInput(f"endpoint {rec.name}: MAC {rec.mac!r}")
    int("".join(parts), 16)


def publish(store: Store, rec: EndpointRecord, lease: int, keys: Keys | None = None) -> int:
    """Announce an endpoint (on the host's liveness lease)."""
    keys = keys or Keys()
    _check_record(rec)
    return store.put(keys.endpoint(rec.network, rec.host, rec.name), rec.value(), lease)


def publish_many(store: Store, records: list[EndpointRecord], lease: int,
                 keys: Keys | None = None, per_txn: int = 64) -> None:
    """Republish (reconcile, a renewed lease): a few transactions, not one
    put per endpoint.  etcd caps a transaction at 128 operations."""
    keys = keys or Keys()
    for rec in records:
        _check_record(rec)
    for i in range(0, len(records), per_txn):
        store.txn([], [Put(keys.endpoint(r.network, r.host, r.name), r.value(), lease)
                       for r in records[i:i + per_txn]])


def withdraw(store: Store, network: str, host: str, name: str,
             keys: Keys | None = None) -> None:
    keys = keys or Keys()
    store.delete(keys.endpoint(network, host, name))


@dataclass(frozen=True)
class Desired:
    fdb: frozenset[tuple[str, str]]  # (mac, vtep)
    neigh: frozenset[tuple[str, str]]  # (ip, mac), IPv4 and IPv6 alike


def desired_entries(records: Iterable[EndpointRecord], local_host: str,
                    local_vtep: str = "") -> Desired:
    """What the VXLAN device of ``local_host`` must hold: an FDB entry and
    a neighbour entry per address of an endpoint of another host.  Records pointing at
    our own VTEP are skipped too (a stale name for this very host).  If two
    records claim one IP or one MAC (a transient during a move), the one of
    the host name sorted first wins, so every host decides alike."""
    fdb: dict[str, str] = {}
    neigh: dict[str, str] = {}
    for rec in sorted(records, key=lambda r: (r.host, r.name)):
        if rec.host == local_host or (local_vtep and rec.vtep == local_vtep):
            continue
        fdb.setdefault(rec.mac, rec.vtep)
        for ip in rec.ips:
            neigh.setdefault(ip, rec.mac)
    return Desired(frozenset(fdb.items()), frozenset(neigh.items()))


class VxlanApplier:
    """Programs one VXLAN device (``index``) in the namespace ``rt`` was
    opened in, from :class:`Desired` sets, sending only the difference
    from what it programmed last."""

    def __init__(self, rt, index: int) -> None:  # rt: nsnet.kernel.Rtnl
        self.rt, self.index = rt, index
        self.fdb: set[tuple[str, str]] = set()
        self.neigh: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.batches = 0

    def sync_from_kernel(self) -> VxlanApplier:
        """Start from what the device holds now (after a crash, a restart):
        the next :meth:`apply` then also removes entries nobody wants any
        more, instead of only adding."""
        from ..kernel.vxlan import fdb_entries, permanent_neighbours

        with self.lock:
            self.fdb = {(e.mac, e.dst) for e in fdb_entries(self.rt, self.index)}
            self.neigh = permanent_neighbours(self.rt, self.index)
        return self

    def apply(self, desired: Desired) -> list[str]:
        """Make the device match ``desired``; returns the failures' texts."""
        from ..kernel.vxlan import req_fdb_append, req_fdb_del, req_neigh_del, req_neigh_replace

        with self.lock:
            # each request with what it changes: (table, entry, adds)
            work: list[tuple[object, str, tuple[str, str], bool]] = []
            for entry in self.fdb - desired.fdb:
                work.append((req_fdb_del(self.index, *entry), "fdb", entry, False))
            wanted_ips = {ip for ip, _ in desired.neigh}
            for entry in self.neigh - desired.neigh:
                if entry[0] not in wanted_ips:  # else replaced below
                    work.append((req_neigh_del(self.index, entry[0]), "neigh", entry, False))
            for entry in desired.fdb - self.fdb:
                work.append((req_fdb_append(self.index, *entry), "fdb", entry, True))
            for entry in desired.neigh - self.neigh:
                work.append((req_neigh_replace(self.index, *entry), "neigh", entry, True))
            if not work:
                return []
            self.batches += 1
            reqs = [w[0] for w in work]
            errors = self.rt.batch(reqs).errors
            self.fdb, self.neigh = set(desired.fdb), set(desired.neigh)
            texts = []
            for (req, table, entry, adds), (err, msg) in zip(work, errors, strict=False):
                # an FDB entry already present (EEXIST) or one already gone
                # (ENOENT) is the state we wanted
                if not err or err in (2, 17):
                    continue
                texts.append(f"{req.what}: errno {err} {msg}")
                # not as wanted: left out of (or kept in) what was programmed,
                # so the next apply -- the agent's periodic re-read -- tries again
                done = self.fdb if table == "fdb" else self.neigh
                if adds:
                    done.discard(entry)
                else:
                    done.add(entry)
            return texts


class RegistryWatcher:
    """Keeps ``on_change(desired)`` told of one network's desired entries
    for ``local_host``: lists the prefix, then watches it from there."""

    def __init__(self, store: Store, network: str, local_host: str,
                 on_change: Callable[[Desired], object], local_vtep: str = "",
                 keys: Keys | None = None) -> None:
        self.store, self.network, self.local_host = store, network, local_host
        self.local_vtep = local_vtep
        self.on_change = on_change
        self.keys = keys or Keys()
        self.records: dict[str, EndpointRecord] = {}
        self.watch = None
        self.lock = threading.Lock()
        self.events = 0

    def start(self) -> RegistryWatcher:
        revision = self._list()
        self.watch = self.store.watch_prefix(self.keys.endpoints(self.network), revision + 1,
                                             self._on_events, self._on_reset)
        return self

    def _list(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.endpoints(self.network))
        with self.lock:
            self.records = {kv.key: EndpointRecord.from_kv(self.keys, kv) for kv in kvs}
            self._push()
        return revision

    def _on_reset(self) -> None:
        revision = self._list()
        if self.watch is not None:
            self.watch.next_revision = revision + 1  # type: ignore[attr-defined]

    def _on_events(self, events: list[Event], revision: int) -> None:
        with self.lock:
            for ev in events:
                self.events += 1
                if ev.kind == "delete":
                    self.records.pop(ev.kv.key, None)
                else:
                    self.records[ev.kv.key] = EndpointRecord.from_kv(self.keys, ev.kv)
            self._push()

    def _push(self) -> None:
        self.on_change(desired_entries(self.records.values(), self.local_host, self.local_vtep))

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
