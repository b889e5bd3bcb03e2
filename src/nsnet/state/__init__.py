"""The state store: every kernel object nsnet owns, in SQLite, plus a lock.

One database per host namespace's state directory.  All writes of one
operation go in one transaction; kernel-mutating sections run under an
exclusive ``flock`` so concurrent nsnet processes serialise instead of
racing (a waiting process says so after a second, and gives up after a
timeout with a clear error).

One lock for the whole state rather than one per network: operations span
networks (a namespace on two networks, default-route moves, overlap checks
against every subnet), the kernel serialises rtnetlink under rtnl_lock
anyway (two threads configuring namespaces in parallel measured no faster),
and a bulk operation holds the lock for milliseconds per endpoint.  The
journal table records each operation's intent before the kernel is touched
(see Engine.recover).

``zone_versions`` counts, per network, the changes to its endpoints (kept by
triggers, so every writer -- this nsnet or an older one -- bumps it): the
DNS server re-reads only the networks whose count moved, not every endpoint
of every network at each change.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from ..config import env_seconds
from ..errors import AlreadyExists, LockTimeout, StateError
from ..model import HANDOFF_PATH, Endpoint, Network, PortMap, Published
from .trust import ensure_trusted_dir, open_private

__all__ = ["StateLock", "Store"]

SCHEMA_VERSION = 9
# v9 (#15): networks.link_group, the IFLA_GROUP of the network's host veth
# ends (0 for every older network: their ends have no group of their own).
# v8 (overlay, #17): networks.driver ('bridge' for every older network).
# v7 (IPv6, #16): networks.subnet6/gateway6/ip_range6/ipv6_mode, endpoints.address6.
# An IPv6-only network's endpoints have address '' (no IPv4), so "one address
# per network" is a partial unique index per family (address != '') instead
# of the v6 table's UNIQUE(network_id, address): the endpoints table is
# rebuilt once by the upgrade (see _rebuild_endpoints).
_ENDPOINTS = """CREATE TABLE IF NOT EXISTS endpoints(
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES networks(id),
    netns TEXT NOT NULL, ifname TEXT NOT NULL, host_ifname TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL, mac TEXT NOT NULL, default_route INTEGER NOT NULL,
    created REAL NOT NULL, aliases TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '', address6 TEXT NOT NULL DEFAULT '',
    UNIQUE(network_id, netns), UNIQUE(netns, ifname));
"""
_ENDPOINT_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS endpoints_by_address ON endpoints(network_id, address)
    WHERE address != '';
CREATE UNIQUE INDEX IF NOT EXISTS endpoints_by_address6 ON endpoints(network_id, address6)
    WHERE address6 != '';
CREATE INDEX IF NOT EXISTS endpoints_by_mac ON endpoints(network_id, mac);
"""
_ENDPOINT_COLUMNS = ("id, network_id, netns, ifname, host_ifname, address, mac, default_route, "
                     "created, aliases, labels, address6")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces(
    name TEXT PRIMARY KEY, path TEXT NOT NULL, owned INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS networks(
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL, gateway TEXT NOT NULL, ip_range TEXT NOT NULL, mtu INTEGER NOT NULL,
    created REAL NOT NULL, masquerade INTEGER NOT NULL DEFAULT 1,
    internal INTEGER NOT NULL DEFAULT 0, icc INTEGER NOT NULL DEFAULT 1,
    dns INTEGER NOT NULL DEFAULT 1, dns_servers TEXT NOT NULL DEFAULT '',
    aux_addresses TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '',
    subnet6 TEXT NOT NULL DEFAULT '', gateway6 TEXT NOT NULL DEFAULT '',
    ip_range6 TEXT NOT NULL DEFAULT '', ipv6_mode TEXT NOT NULL DEFAULT 'nat',
    driver TEXT NOT NULL DEFAULT 'bridge', link_group INTEGER NOT NULL DEFAULT 0);
""" + _ENDPOINTS + """
CREATE TABLE IF NOT EXISTS ports(
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    proto TEXT NOT NULL, host_ip TEXT NOT NULL, host_port INTEGER NOT NULL, port INTEGER NOT NULL,
    UNIQUE(proto, host_ip, host_port));
CREATE INDEX IF NOT EXISTS ports_by_port ON ports(proto, host_port);
CREATE INDEX IF NOT EXISTS ports_by_endpoint ON ports(endpoint_id);
CREATE INDEX IF NOT EXISTS namespaces_by_path ON namespaces(path);
CREATE TABLE IF NOT EXISTS cni_attachments(
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, network TEXT NOT NULL,
    netns TEXT NOT NULL, mount TEXT NOT NULL, ipam TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY(container_id, ifname, network));
CREATE TABLE IF NOT EXISTS topology_objects(
    topology TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, spec TEXT NOT NULL,
    PRIMARY KEY(kind, key));
CREATE TABLE IF NOT EXISTS resolv_files(netns TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS zone_versions(network_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS zone_ep_added AFTER INSERT ON endpoints BEGIN
    INSERT INTO zone_versions VALUES(NEW.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1; END;
CREATE TRIGGER IF NOT EXISTS zone_ep_removed AFTER DELETE ON endpoints BEGIN
    INSERT INTO zone_versions VALUES(OLD.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1; END;
CREATE TRIGGER IF NOT EXISTS zone_ep_changed AFTER UPDATE ON endpoints BEGIN
    INSERT INTO zone_versions VALUES(OLD.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1;
    INSERT INTO zone_versions VALUES(NEW.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1; END;
CREATE TRIGGER IF NOT EXISTS zone_net_removed AFTER DELETE ON networks BEGIN
    DELETE FROM zone_versions WHERE network_id=OLD.id;
    DELETE FROM remote_names WHERE network_id=OLD.id; END;
-- overlay networks (#17): names of endpoints on other hosts, for the
-- embedded DNS; kept by the overlay agent from the cluster's records
CREATE TABLE IF NOT EXISTS remote_names(
    network_id TEXT NOT NULL, name TEXT NOT NULL, address TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS remote_names_by_network ON remote_names(network_id);
CREATE TRIGGER IF NOT EXISTS zone_remote_added AFTER INSERT ON remote_names BEGIN
    INSERT INTO zone_versions VALUES(NEW.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1; END;
CREATE TRIGGER IF NOT EXISTS zone_remote_removed AFTER DELETE ON remote_names BEGIN
    INSERT INTO zone_versions VALUES(OLD.network_id, 1)
    ON CONFLICT(network_id) DO UPDATE SET version=version+1; END;
CREATE TABLE IF NOT EXISTS journal(
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL);
"""

_EP_SELECT = """SELECT e.id, n.name, e.netns, e.ifname, e.host_ifname, e.address, e.mac,
    n.gateway, e.default_route, e.created, e.aliases, e.labels, e.address6,
    CASE WHEN e.address6 != '' THEN n.gateway6 ELSE '' END FROM endpoints e JOIN networks n
    ON n.id = e.network_id"""


_CHUNK = 500  # bound on "?" parameters per statement (SQLite's limit is 32766 or 999)


def _chunks(items: Iterable[str]) -> Iterator[tuple[str, ...]]:
    items = list(dict.fromkeys(items))
    for start in range(0, len(items), _CHUNK):
        yield tuple(items[start : start + _CHUNK])


def _marks(chunk: tuple[str, ...]) -> str:
    return ",".join("?" * len(chunk))


_NETWORK_COLUMNS = ("id, name, bridge, subnet, gateway, ip_range, mtu, created, masquerade, "
                    "internal, icc, dns, dns_servers, aux_addresses, labels, subnet6, gateway6, "
                    "ip_range6, ipv6_mode, driver, link_group")


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Labels and aux addresses: a JSON object, '' for none."""
    return tuple(json.loads(text).items()) if text else ()


def _pairs_text(pairs: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(pairs)) if pairs else ""


def _endpoint(row: tuple) -> Endpoint:
    return Endpoint(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                    bool(row[8]), row[9], _split(row[10]), _pairs(row[11]), row[12], row[13])


def _published(row: tuple) -> Published:
    return Published(row[0], row[1], row[2], row[3].split("/")[0], PortMap(*row[4:8]),
                     row[8].split("/")[0], row[9] == "routed")


class Store:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        ensure_trusted_dir(state_dir, "state directory", 0o700)  # as ssh's StrictModes
        try:
            self.db = sqlite3.connect(os.path.join(state_dir, "state.db"), timeout=30,
                                      isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state store in {state_dir}: {exc}") from None

    def _migrate(self) -> None:
        self.db.executescript(_SCHEMA)  # idempotent; executescript commits first
        if self._schema_version() < 7:
            self._rebuild_endpoints()
        self.db.executescript(_ENDPOINT_INDEXES)
        with self.transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StateError(f"state store {self.state_dir} has schema {row[0]}, newer "
                                 f"than this nsnet ({SCHEMA_VERSION}); upgrade nsnet")
            elif int(row[0]) < SCHEMA_VERSION:
                self._upgrade(int(row[0]))

    def _schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        return SCHEMA_VERSION if row is None else int(row[0])

    def _rebuild_endpoints(self) -> None:
        """v7: drop the table constraint UNIQUE(network_id, address) (an
        IPv6-only network's endpoints all have address ''), SQLite's way:
        copy into a new table, swap.  Foreign keys are off meanwhile (a DROP
        would otherwise cascade to the published ports) and checked after;
        all in one transaction, so a crash leaves the old table."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(endpoints)")}
        if "address6" in columns:  # rebuilt already (crash after the swap)
            return
        have = [c for c in _ENDPOINT_COLUMNS.split(", ") if c in columns]
        self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.transaction():
                # SQLite's documented order: new table, copy, drop, rename the
                # new one (renaming the old one would rewrite the ports' foreign
                # key to follow it)
                self.db.execute(_ENDPOINTS.replace("EXISTS endpoints(", "EXISTS endpoints_v7("))
                self.db.execute(f"INSERT INTO endpoints_v7({', '.join(have)}) "
                                f"SELECT {', '.join(have)} FROM endpoints")
                self.db.execute("DROP TABLE endpoints")
                self.db.execute("ALTER TABLE endpoints_v7 RENAME TO endpoints")
                broken = self.db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StateError(f"state store upgrade found dangling rows: {broken[:3]}")
        finally:
            self.db.execute("PRAGMA foreign_keys=ON")

    def _upgrade(self, version: int) -> None:
        columns = [("networks", "masquerade", "INTEGER NOT NULL DEFAULT 1"),  # v2: firewall
                   ("networks", "internal", "INTEGER NOT NULL DEFAULT 0"),
                   ("networks", "icc", "INTEGER NOT NULL DEFAULT 1")] if version < 2 else []
        if version < 3:  # v3: embedded DNS
            columns += [("networks", "dns", "INTEGER NOT NULL DEFAULT 1"),
                        ("networks", "dns_servers", "TEXT NOT NULL DEFAULT ''"),
                        ("endpoints", "aliases", "TEXT NOT NULL DEFAULT ''")]
        if version < 6:  # v6: aux addresses and labels (Docker's vocabulary)
            columns += [("networks", "aux_addresses", "TEXT NOT NULL DEFAULT ''"),
                        ("networks", "labels", "TEXT NOT NULL DEFAULT ''"),
                        ("endpoints", "labels", "TEXT NOT NULL DEFAULT ''")]
        if version < 7:  # v7: IPv6 (endpoints.address6 came with the rebuild)
            columns += [("networks", "subnet6", "TEXT NOT NULL DEFAULT ''"),
                        ("networks", "gateway6", "TEXT NOT NULL DEFAULT ''"),
                        ("networks", "ip_range6", "TEXT NOT NULL DEFAULT ''"),
                        ("networks", "ipv6_mode", "TEXT NOT NULL DEFAULT 'nat'")]
        if version < 8:  # v8: network drivers (overlay, #17)
            columns += [("networks", "driver", "TEXT NOT NULL DEFAULT 'bridge'")]
        if version < 9:  # v9: the host ends' link group (#15)
            columns += [("networks", "link_group", "INTEGER NOT NULL DEFAULT 0")]
        # the endpoints table was rebuilt with all its columns (v7)
        have = {t: {r[1] for r in self.db.execute(f"PRAGMA table_info({t})")}
                for t in ("networks", "endpoints")}
        columns = [c for c in columns if c[1] not in have[c[0]]]
        for table, column, decl in columns:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # journal: intents written before the kernel is touched -------------
    def journal_add(self, kind: str, payload: dict) -> int:
        cur = self.db.execute("INSERT INTO journal(kind, payload, created) VALUES(?, ?, ?)",
                              (kind, json.dumps(payload), time.time()))
        return int(cur.lastrowid or 0)

    def journal_remove(self, op_id: int) -> None:
        self.db.execute("DELETE FROM journal WHERE id=?", (op_id,))

    def journal(self) -> list[tuple[int, str, dict]]:
        rows = self.db.execute("SELECT id, kind, payload FROM journal ORDER BY id")
        return [(i, kind, json.loads(payload)) for i, kind, payload in rows]

    # namespaces ---------------------------------------------------------
    def namespaces(self, names: Iterable[str] | None = None) -> dict[str, tuple[str, bool]]:
        """name -> (path, owned): all, or only those of ``names`` (by key)."""
        if names is None:
            rows = self.db.execute("SELECT name, path, owned FROM namespaces")
            return {name: (path, bool(owned)) for name, path, owned in rows}
        out = {}
        for chunk in _chunks(names):
            rows = self.db.execute("SELECT name, path, owned FROM namespaces WHERE name IN "
                                   f"({_marks(chunk)})", chunk)
            out.update({name: (path, bool(owned)) for name, path, owned in rows})
        return out

    def handed_off(self, names: Iterable[str] | None = None) -> set[str]:
        """Names recorded as handed off (their inside another manager holds),
        by the path index: all of them, or those among ``names``."""
        if names is None:
            rows = self.db.execute("SELECT name FROM namespaces WHERE path=?", (HANDOFF_PATH,))
            return {r[0] for r in rows}
        return {n for n, (path, _o) in self.namespaces(names).items() if path == HANDOFF_PATH}

    def forget_idle_handoffs(self) -> None:
        """Drop handed-off names no endpoint uses any more (path and netns
        indexes: O(handed-off names), not O(namespaces + endpoints))."""
        self.db.execute("DELETE FROM namespaces WHERE path=? AND NOT EXISTS("
                        "SELECT 1 FROM endpoints e WHERE e.netns=namespaces.name)",
                        (HANDOFF_PATH,))

    def add_namespaces(self, items: Iterable[tuple[str, str, bool]]) -> None:
        now = time.time()
        self.db.executemany("INSERT OR IGNORE INTO namespaces VALUES(?, ?, ?, ?)",
                            [(n, p, int(o), now) for n, p, o in items])

    def remove_namespaces(self, names: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM namespaces WHERE name=?", [(n,) for n in names])

    # networks -----------------------------------------------------------
    def add_network(self, net: Network) -> None:
        try:
            self.db.execute(f"INSERT INTO networks({_NETWORK_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, "
                            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (net.id, net.name, net.bridge, net.subnet, net.gateway,
                             net.ip_range, net.mtu, net.created, int(net.masquerade),
                             int(net.internal), int(net.icc), int(net.dns),
                             ",".join(net.dns_servers), _pairs_text(net.aux_addresses),
                             _pairs_text(net.labels), net.subnet6, net.gateway6,
                             net.ip_range6, net.ipv6_mode, net.driver, net.link_group))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"network {net.name!r} (or bridge {net.bridge!r}) already "
                                "exists") from None

    def remove_network(self, network_id: str) -> None:
        self.db.execute("DELETE FROM networks WHERE id=?", (network_id,))

    _NET_SELECT = f"SELECT {_NETWORK_COLUMNS} FROM networks"

    @staticmethod
    def _network(row: tuple, eps: tuple[Endpoint, ...] = ()) -> Network:
        return Network(*row[:8], bool(row[8]), bool(row[9]), bool(row[10]), bool(row[11]),
                       _split(row[12]), _pairs(row[13]), _pairs(row[14]), endpoints=eps,
                       subnet6=row[15], gateway6=row[16], ip_range6=row[17], ipv6_mode=row[18],
                       driver=row[19], link_group=row[20])

    def networks(self, with_endpoints: bool = True) -> list[Network]:
        """Every network; ``with_endpoints=False`` leaves their endpoints out
        (O(networks), not O(endpoints): for checks that need only the
        networks' own fields -- subnets, bridges, gateways, masquerade)."""
        rows = self.db.execute(self._NET_SELECT + " ORDER BY created, name").fetchall()
        if not with_endpoints:
            return [self._network(row) for row in rows]
        by_net: dict[str, list[Endpoint]] = {}
        for e in self.endpoints():
            by_net.setdefault(e.network, []).append(e)
        return [self._network(row, tuple(by_net.get(row[1], ()))) for row in rows]

    def network(self, name: str) -> Network | None:
        """One network with its endpoints, by index: O(its own endpoints)."""
        row = self.db.execute(self._NET_SELECT + " WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return self._network(row, tuple(self.endpoints("e.network_id=?", (row[0],))))

    def network_by_id(self, network_id: str) -> Network | None:
        row = self.db.execute(self._NET_SELECT + " WHERE id=?", (network_id,)).fetchone()
        if row is None:
            return None
        return self._network(row, tuple(self.endpoints("e.network_id=?", (network_id,))))

    def link_groups(self) -> set[int]:
        """The link groups nsnet's networks hold (0 aside)."""
        return {r[0] for r in self.db.execute("SELECT link_group FROM networks "
                                              "WHERE link_group != 0")}

    def dns_networks(self) -> set[str]:
        """Names of the networks with DNS on and at least one endpoint (what
        the DNS server serves): an index probe per network, no endpoint read."""
        rows = self.db.execute("SELECT n.name FROM networks n WHERE n.dns=1 AND EXISTS("
                               "SELECT 1 FROM endpoints e WHERE e.network_id=n.id)")
        return {r[0] for r in rows}

    def endpoint_counts(self) -> dict[str, int]:
        """Network name -> number of endpoints (one grouped index walk)."""
        rows = self.db.execute("SELECT n.name, COUNT(e.id) FROM networks n LEFT JOIN endpoints e "
                               "ON e.network_id=n.id GROUP BY n.id")
        return {name: count for name, count in rows}

    # endpoints ----------------------------------------------------------
    def add_endpoints(self, network_id: str, eps: Iterable[Endpoint]) -> None:
        self.db.executemany(
            f"INSERT INTO endpoints({_ENDPOINT_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?)",
            [(e.id, network_id, e.netns, e.ifname, e.host_ifname, e.address, e.mac,
              int(e.default_route), e.created, ",".join(e.aliases), _pairs_text(e.labels),
              e.address6) for e in eps])

    def remove_endpoints(self, ids: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM endpoints WHERE id=?", [(i,) for i in ids])

    def set_default_route(self, ep_id: str) -> None:
        self.db.execute("UPDATE endpoints SET default_route=1 WHERE id=?", (ep_id,))

    def endpoints(self, where: str = "", args: tuple = ()) -> list[Endpoint]:
        sql = _EP_SELECT + (f" WHERE {where}" if where else "") + " ORDER BY e.created, e.netns"
        return [_endpoint(r) for r in self.db.execute(sql, args)]

    def endpoint_networks(self) -> list[tuple[str, str]]:
        """(namespace, network name) of every endpoint, in endpoint order:
        all ``ns ls`` needs, without building 5000 Endpoint objects."""
        return self.db.execute(
            "SELECT e.netns, n.name FROM endpoints e JOIN networks n ON n.id = e.network_id"
            " ORDER BY e.created, e.netns").fetchall()

    def endpoints_of_netns(self, netns: str) -> list[Endpoint]:
        return self.endpoints("e.netns=?", (netns,))

    def endpoints_of_namespaces(self, names: Iterable[str]) -> list[Endpoint]:
        """Endpoints of these namespaces, by the netns index."""
        out: list[Endpoint] = []
        for chunk in _chunks(names):
            out += self.endpoints(f"e.netns IN ({_marks(chunk)})", tuple(chunk))
        return sorted(out, key=lambda e: (e.created, e.netns))

    def endpoints_by_id(self, ids: Iterable[str]) -> list[Endpoint]:
        """These endpoints (those still recorded), by primary key."""
        out: list[Endpoint] = []
        for chunk in _chunks(ids):
            out += self.endpoints(f"e.id IN ({_marks(chunk)})", tuple(chunk))
        return sorted(out, key=lambda e: (e.created, e.netns))

    def host_ifnames_used(self, names: Iterable[str]) -> set[str]:
        """Those of these host end names that a recorded endpoint has (by the
        column's unique index)."""
        out: set[str] = set()
        for chunk in _chunks(names):
            out |= {r[0] for r in self.db.execute(
                f"SELECT host_ifname FROM endpoints WHERE host_ifname IN ({_marks(chunk)})",
                chunk)}
        return out

    def netns_with_endpoints(self) -> set[str]:
        """Every namespace that has an endpoint (a covering index walk)."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT netns FROM endpoints")}

    # CNI attachments (container id + interface -> namespace) -------------
    def add_attachment(self, cid: str, ifname: str, network: str, netns: str, mount: str,
                       ipam: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO cni_attachments VALUES(?, ?, ?, ?, ?, ?, ?)",
                        (cid, ifname, network, netns, mount, json.dumps(ipam), time.time()))

    def attachments(self, network: str) -> list[dict]:
        rows = self.db.execute("SELECT container_id, ifname, netns, mount, ipam FROM "
                               "cni_attachments WHERE network=?", (network,)).fetchall()
        return [{"containerID": r[0], "ifname": r[1], "netns": r[2], "mount": r[3],
                 "ipam": json.loads(r[4])} for r in rows]

    def remove_attachment(self, cid: str, ifname: str, network: str) -> None:
        self.db.execute("DELETE FROM cni_attachments WHERE container_id=? AND ifname=? AND "
                        "network=?", (cid, ifname, network))

    # resolv.conf files nsnet wrote (recorded before writing, dropped after
    # removing): drift and cleanup look at these, never at all of /etc/netns
    def resolv_files(self, names: Iterable[str] | None = None) -> set[str]:
        """The recorded files: all, or those among ``names`` (by key)."""
        if names is None:
            return {r[0] for r in self.db.execute("SELECT netns FROM resolv_files")}
        out: set[str] = set()
        for chunk in _chunks(names):
            out |= {r[0] for r in self.db.execute(
                f"SELECT netns FROM resolv_files WHERE netns IN ({_marks(chunk)})", chunk)}
        return out

    def add_resolv_files(self, names: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO resolv_files VALUES(?)",
                            [(n,) for n in names])

    def remove_resolv_files(self, names: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM resolv_files WHERE netns=?", [(n,) for n in names])

    # topologies: which objects a topology file owns, with their spec --------
    def topology_objects(self, topology: str | None = None
                         ) -> dict[tuple[str, str], tuple[str, str]]:
        """(kind, key) -> (topology, spec JSON) -- of one topology, or all."""
        rows = self.db.execute("SELECT topology, kind, key, spec FROM topology_objects" + (
            " WHERE topology=?" if topology else ""), (topology,) if topology else ())
        return {(k, key): (t, spec) for t, k, key, spec in rows}

    def set_topology_object(self, topology: str, kind: str, key: str, spec: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO topology_objects VALUES(?, ?, ?, ?)",
                        (topology, kind, key, spec))

    def drop_topology_object(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM topology_objects WHERE kind=? AND key=?", (kind, key))

    # published ports ----------------------------------------------------
    def add_ports(self, items: Iterable[tuple[str, PortMap]]) -> None:
        try:
            self.db.executemany("INSERT INTO ports VALUES(?, ?, ?, ?, ?)",
                                [(ep, m.proto, m.host_ip, m.host_port, m.port)
                                 for ep, m in items])
        except sqlite3.IntegrityError:
            raise AlreadyExists("a host port is already published") from None

    def remove_ports(self, items: Iterable[tuple[str, PortMap]]) -> None:
        self.db.executemany("DELETE FROM ports WHERE endpoint_id=? AND proto=? AND host_ip=? "
                            "AND host_port=?",
                            [(ep, m.proto, m.host_ip, m.host_port) for ep, m in items])

    _PUBLISHED = ("SELECT p.endpoint_id, n.name, e.netns, e.address, p.proto, p.host_ip, "
                  "p.host_port, p.port, e.address6, n.ipv6_mode FROM ports p "
                  "JOIN endpoints e ON e.id = p.endpoint_id "
                  "JOIN networks n ON n.id = e.network_id")

    def published_of(self, endpoint_ids: Iterable[str]) -> list[Published]:
        """The mappings of these endpoints, by the endpoint index."""
        out: list[Published] = []
        for chunk in _chunks(endpoint_ids):
            out += [_published(r) for r in self.db.execute(
                self._PUBLISHED + f" WHERE p.endpoint_id IN ({_marks(chunk)})", chunk)]
        return out

    def published(self, endpoint_id: str | None = None) -> list[Published]:
        where, args = (" WHERE p.endpoint_id=?", (endpoint_id,)) if endpoint_id else ("", ())
        rows = self.db.execute(self._PUBLISHED + where + " ORDER BY n.name, e.netns, p.proto, "
                               "p.host_ip, p.host_port", args)
        return [_published(r) for r in rows]

    def published_at(self, maps: Iterable[PortMap]) -> list[Published]:
        """Mappings on the same proto and host port as any of ``maps``: what
        could clash, found by index whatever the total count."""
        out = []
        for proto, port in {(m.proto, m.host_port) for m in maps}:
            rows = self.db.execute(self._PUBLISHED + " WHERE p.proto=? AND p.host_port=?",
                                   (proto, port))
            out += [_published(r) for r in rows]
        return out

    def mac_user(self, network_id: str, mac: str) -> str | None:
        """The namespace whose endpoint on this network has ``mac`` (by index)."""
        row = self.db.execute("SELECT netns FROM endpoints WHERE network_id=? AND mac=? LIMIT 1",
                              (network_id, mac.lower())).fetchone()
        return row[0] if row else None

    def macs(self, network_id: str) -> set[str]:
        """Every MAC on this network's bridge (by index: O(its endpoints))."""
        rows = self.db.execute("SELECT mac FROM endpoints WHERE network_id=?", (network_id,))
        return {r[0] for r in rows}

    def remote_names(self, network_id: str) -> set[tuple[str, str]]:
        """(name, address) of an overlay network's endpoints on other hosts."""
        return set(self.db.execute("SELECT name, address FROM remote_names WHERE network_id=?",
                                   (network_id,)))

    def set_remote_names(self, network_id: str, names: set[tuple[str, str]]) -> None:
        """Replace them (inside the caller's transaction)."""
        self.db.execute("DELETE FROM remote_names WHERE network_id=?", (network_id,))
        self.db.executemany("INSERT INTO remote_names VALUES(?, ?, ?)",
                            [(network_id, n, a) for n, a in sorted(names)])

    def used_addresses(self, network_id: str) -> set[str]:
        """Addresses of both families in use on the network (the allocator
        keeps those of its own family)."""
        rows = self.db.execute("SELECT address, address6 FROM endpoints WHERE network_id=?",
                               (network_id,))
        return {a.split("/")[0] for row in rows for a in row if a}

    # the ids the host gives the namespaces nsnet connects (kernel/rtnl.py
    # req_new_nsid): handed out downward from NSID_TOP, so the newest is first
    # in the kernel's linear walk of the host's ids
    def take_nsids(self, count: int) -> list[int]:
        """``count`` fresh ids, each below all handed out before (fewer, none,
        once NSID_FLOOR is reached: the kernel then numbers them itself).
        Call inside a transaction, as every write."""
        row = self.db.execute("SELECT value FROM meta WHERE key='next_nsid'").fetchone()
        top = int(row[0]) if row else NSID_TOP
        ids = [i for i in range(top, top - count, -1) if i >= NSID_FLOOR]
        self.db.execute("INSERT OR REPLACE INTO meta VALUES('next_nsid', ?)",
                        (str(top - len(ids)),))
        return ids

    # the host's unique-local IPv6 prefix (RFC 4193): made once, then stable
    def ula_global_id(self) -> str:
        """The host's 40-bit ULA global ID, generated and stored on first use
        (call inside a transaction, as every write)."""
        from ..ipam.ula import new_global_id

        self.db.execute("INSERT OR IGNORE INTO meta VALUES('ula_global_id', ?)",
                        (new_global_id(),))
        return str(self.db.execute("SELECT value FROM meta WHERE key='ula_global_id'")
                   .fetchone()[0])


NSID_TOP, NSID_FLOOR = 1 << 30, 1 << 29  # far above the ids the kernel numbers from 0


class StateLock:
    """Exclusive flock on ``state_dir/lock``; says it waits after ``notice_after``."""

    def __init__(self, state_dir: str, timeout: float | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.timeout = timeout if timeout is not None else env_seconds("NSNET_LOCK_TIMEOUT",
                                                                       120.0)
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.fd = -1
        self.depth = 0

    def __enter__(self) -> StateLock:
        if self.depth == 0:
            self._acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def _acquire(self) -> None:
        try:
            self.fd = open_private(self.path)  # never through a symlink
        except OSError as exc:
            raise StateError(f"cannot open the state lock {self.path}: "
                             f"{exc.strerror or exc}") from None
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    os.close(self.fd)
                    self.fd = -1
                    raise LockTimeout(f"gave up after {self.timeout:.0f}s waiting for the "
                                      f"nsnet state lock {self.path} (another nsnet is "
                                      "running)") from None
                if waited >= 1.0 and not told:
                    self.notify(f"nsnet: waiting for the state lock {self.path} "
                                "(another nsnet process is working)...")
                    told = True
                time.sleep(0.02)
