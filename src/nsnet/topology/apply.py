"""Bring the kernel to a topology file: plan, then apply; and take it down.

A topology owns what it creates: every network, node (namespace),
connection, point-to-point link and static route it made is recorded with
its spec under the topology's name.  ``plan`` compares the file with those
records -- so a second ``up`` finds nothing to do, a changed file changes
only what changed (other endpoints keep their interfaces), and an object
removed from the file is removed from the kernel -- and refuses to take over
anything it does not own.  Networks, nodes and connections go through the
engine's bulk path; links and routes through the engine's links resource
(:mod:`nsnet.engine.links`), a link under a journaled intent as well.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .. import kernel as k
from ..crash import crashpoint
from ..engine import Engine, LinkEnd, P2PLink
from ..errors import Conflict, KernelError, NotFound
from ..model import ALIAS_PREFIX, ConnectOptions, Network
from .load import Connection, Link, TopologySpec

__all__ = ["Change", "down", "plan", "up"]

ORDER = ("network", "node", "connection", "link", "route")


@dataclass(frozen=True)
class Change:
    verb: str  # create | remove | change
    kind: str  # network | node | connection | link | route
    key: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb:<7} {self.kind:<10} {self.key}" + (f"  ({self.detail})"
                                                               if self.detail else "")


def _conn_spec(c: Connection) -> dict:
    d = asdict(c)
    d["publish"] = [str(p) for p in c.publish]
    if not c.ip6:  # as recorded before IPv6: an unchanged file stays unchanged
        del d["ip6"]
    return d


def specs(topo: TopologySpec) -> dict[tuple[str, str], str]:
    """Every object the file asks for, (kind, key) -> canonical JSON spec."""
    out: dict[tuple[str, str], str] = {}
    for name, spec in topo.networks.items():
        out[("network", name)] = json.dumps(asdict(spec), sort_keys=True)
    for name, node in topo.nodes.items():
        out[("node", name)] = json.dumps({"forward": True}) if node.forward else "{}"
        for c in node.connect:
            out[("connection", f"{name}@{c.network}")] = json.dumps(_conn_spec(c),
                                                                    sort_keys=True)
        for dst, via in node.routes:
            out[("route", f"{name}>{dst}")] = json.dumps({"via": via})
    for link in topo.links:
        out[("link", link.key)] = json.dumps(asdict(link), sort_keys=True)
    return out


def plan(engine: Engine, topo: TopologySpec) -> list[Change]:
    want = specs(topo)
    everyone = engine.topology_objects()
    have = {key: spec for key, (owner, spec) in everyone.items() if owner == topo.name}
    _refuse_foreign(engine, topo, want, everyone)
    changes = [Change("remove", kind, key) for (kind, key) in have if (kind, key) not in want]
    live = _Live(engine)
    live.know_nodes([key for kind, key in want if kind == "node"])
    for (kind, key), spec in want.items():
        if (kind, key) not in have:
            changes.append(Change("create", kind, key))
        elif have[(kind, key)] != spec:
            changes.append(Change("change", kind, key, _what_changed(have[(kind, key)], spec)))
        elif not live.has(kind, key, json.loads(spec)):
            changes.append(Change("create", kind, key, "recorded but missing"))
    # a network made anew takes its connections with it: they are made anew too
    renewed = {c.key for c in changes if c.kind == "network" and c.verb == "change"}
    touched = {c.key for c in changes if c.kind == "connection"}
    for (kind, key) in want:
        if kind == "connection" and key.split("@", 1)[1] in renewed and key not in touched:
            changes.append(Change("change", kind, key, "its network is made anew"))
    return sorted(changes, key=lambda c: (ORDER.index(c.kind), c.key))


class _Live:
    """Whether a recorded object really exists.  Objects are recorded before
    they are made (and forgotten after they are removed), so a crash or a
    failure in between shows up here as missing, and the next `up` makes it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # looked up by name when asked, not every network and namespace read
        self._nets: dict[str, Network | None] = {}
        self._owned: dict[str, bool] = {}
        self._netns: dict[str, set[str]] = {}  # network -> its endpoints' namespaces
        self.snaps: dict[str, k.Snapshot | None] = {}

    def _net(self, name: str) -> Network | None:
        if name not in self._nets:
            self._nets[name] = self.engine.find_network(name)
        return self._nets[name]

    def _members(self, name: str) -> set[str]:
        if name not in self._netns:
            net = self._net(name)
            self._netns[name] = {e.netns for e in net.endpoints} if net else set()
        return self._netns[name]

    def know_nodes(self, nodes: list[str]) -> None:
        """Look up many nodes' records at once (one query per 500 names)."""
        found = self.engine.recorded_namespaces(nodes)
        self._owned.update({n: found.get(n, False) for n in nodes})

    def _is_owned(self, node: str) -> bool:
        if node not in self._owned:
            self._owned[node] = self.engine.recorded_namespaces([node]).get(node, False)
        return self._owned[node]

    def _snap(self, node: str) -> k.Snapshot | None:
        if node not in self.snaps:
            try:
                self.snaps[node] = self.engine.snapshot(node)
            except NotFound:
                self.snaps[node] = None
        return self.snaps[node]

    def has(self, kind: str, key: str, spec: dict) -> bool:
        if kind == "network":
            return self._net(key) is not None
        if kind == "node":
            return self._is_owned(key)
        if kind == "connection":
            node, name = key.split("@", 1)
            return node in self._members(name)
        if kind == "link":  # complete: both ends carry the mark, set last
            ends = [(self._snap(spec["a"]), spec["a_ifname"]),
                    (self._snap(spec["b"]), spec["b_ifname"])]
            return all(snap and (lk := snap.link(ifname)) and
                       lk.alias.startswith(f"{ALIAS_PREFIX}link:") for snap, ifname in ends)
        node, dst = key.split(">", 1)
        snap = self._snap6(node) if ":" in dst else self._snap(node)
        want = "0.0.0.0/0" if dst == "default" else dst
        default = dst in ("default", "::/0")
        return bool(snap and any(r.dst in (dst, want) or (default and r.is_default)
                                 for r in snap.routes))

    def _snap6(self, node: str) -> k.Snapshot | None:
        try:
            return self.engine.snapshot6(node)
        except NotFound:
            return None


def _what_changed(old: str, new: str) -> str:
    a, b = json.loads(old), json.loads(new)
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def _refuse_foreign(engine: Engine, topo: TopologySpec, want: dict, everyone: dict) -> None:
    for (kind, key) in want:
        owner = everyone.get((kind, key), (topo.name, ""))[0]
        if owner != topo.name:
            raise Conflict(f"{topo.source}: {kind} {key!r} belongs to topology {owner!r}")
    mine = {key for (kind, key), (owner, _) in everyone.items() if owner == topo.name}
    existing = {n.name for n in engine.networks(with_endpoints=False)}  # one light read
    for name in topo.networks:
        if name not in mine and name in existing:
            raise Conflict(f"{topo.source}: network {name!r} exists and was not made by "
                           f"topology {topo.name!r}; nothing was changed")
    for name in topo.nodes:
        if name not in mine and engine.ns_exists(name):
            raise Conflict(f"{topo.source}: namespace {name!r} exists and was not made by "
                           f"topology {topo.name!r}; nothing was changed")


# ------------------------------------------------------------------- apply
def up(engine: Engine, topo: TopologySpec, progress: Callable[[int, int], None] | None = None
       ) -> list[Change]:
    """Apply the plan; returns what was done (empty: nothing to do)."""
    needs_netem = any(e.delay_ms or e.jitter_ms for link in topo.links
                      for e in (link.a_to_b, link.b_to_a))
    if needs_netem and k.has_netem() is False:
        raise KernelError(f"{topo.source}: link emulation 'delay'/'jitter' needs the kernel's "
                          "netem qdisc (CONFIG_NET_SCH_NETEM), which this kernel is built "
                          "without; rate and loss work (run 'nsnet doctor --kernel' to see "
                          "what this kernel supports)")
    with engine.exclusive():
        changes = plan(engine, topo)
        want = specs(topo)
        removals = [c for c in changes if c.verb in ("remove", "change")]
        _remove(engine, topo, removals)
        crashpoint("topology:removed")
        _record(engine, topo.name, [c for c in removals if c.verb == "remove"], None)
        creations = [c for c in changes if c.verb in ("create", "change")]
        # recorded *before* being made: a failure or a crash part-way leaves
        # records of objects that may not exist, which the next plan finds
        # missing and makes (see _Live) -- never an object nobody owns
        _record(engine, topo.name, creations, want)
        crashpoint("topology:recorded")
        _create(engine, topo, creations, progress)
        _apply_loss(engine, topo)
        crashpoint("topology:loss")
    return changes


def _record(engine: Engine, name: str, changes: list[Change], want: dict | None) -> None:
    if want is None:
        engine.forget_topology_objects((c.kind, c.key) for c in changes)
    else:
        engine.record_topology_objects(name, (((c.kind, c.key), want[(c.kind, c.key)])
                                              for c in changes))


def down(engine: Engine, name: str) -> list[Change]:
    """Remove everything topology ``name`` made."""
    with engine.exclusive():
        have = {key: spec for key, (owner, spec) in engine.topology_objects().items()
                if owner == name}
        if not have:
            raise NotFound(f"topology {name!r} is not up")
        changes = sorted((Change("remove", kind, key) for kind, key in have),
                         key=lambda c: (ORDER.index(c.kind), c.key))
        _remove(engine, TopologySpec(name), changes, have)
        crashpoint("topology:removed")
        engine.forget_topology_objects((c.kind, c.key) for c in changes)
    return changes


def _remove(engine: Engine, topo: TopologySpec, changes: list[Change],
            have: dict | None = None) -> None:
    have = have if have is not None else {
        key: spec for key, (owner, spec) in engine.topology_objects().items()
        if owner == topo.name}
    gone_nodes = {c.key for c in changes if c.kind == "node" and c.verb == "remove"}
    gone_nets = {c.key for c in changes if c.kind == "network"}
    unlinked: set[str] = set()
    for c in reversed(changes):  # routes, links, connections, nodes, networks
        spec = json.loads(have.get((c.kind, c.key), "{}"))
        if c.kind == "route" and c.key.split(">")[0] not in gone_nodes:
            _del_route(engine, c.key)
            crashpoint("topology:route-removed")
        elif c.kind == "link":
            _del_link(engine, spec)
            crashpoint("topology:link-removed")
            unlinked |= {spec[e] for e in ("a", "b") if e in spec} - gone_nodes
        elif c.kind == "connection":
            node, net = c.key.split("@", 1)
            if node not in gone_nodes and net not in gone_nets:
                with contextlib.suppress(NotFound):  # already gone
                    engine.disconnect(net, [node])
    if unlinked:  # the loss rules of removed links go before their records do
        _apply_loss(engine, topo, unlinked & set(topo.nodes))
    owned = engine.owned_namespaces(gone_nodes)
    nodes = sorted(n for n in gone_nodes if n in owned)
    if nodes:
        engine.ns_rm(nodes)
    for net in sorted(gone_nets):
        with contextlib.suppress(NotFound):
            engine.network_rm(net, force=True)


def _create(engine: Engine, topo: TopologySpec, changes: list[Change],
            progress: Callable[[int, int], None] | None) -> None:
    def of(kind: str) -> list[Change]:
        return [c for c in changes if c.kind == kind]

    live = _Live(engine)
    for c in of("network"):
        if not live.has("network", c.key, {}):
            engine.network_create(topo.networks[c.key])
    live = _Live(engine)
    conns = [c.key for c in of("connection") if not live.has("connection", c.key, {})]
    # A new node with a connection is made by that connect (--create), as the
    # bulk command makes it: born with IPv6 off, nothing to look at inside.
    born = {key.split("@", 1)[0] for key in conns}
    nodes = [c.key for c in of("node") if not live.has("node", c.key, {}) and c.key not in born]
    if nodes:
        engine.ns_add(nodes)
    _connect_all(engine, topo, conns, progress)
    for c in of("node"):
        engine.set_forwarding(c.key, topo.nodes[c.key].forward, _has_ipv6(topo, c.key))
        crashpoint("topology:forwarding")
    for c in of("link"):
        link = next(lk for lk in topo.links if lk.key == c.key)
        _del_link(engine, json.loads(json.dumps(asdict(link))))  # a half-made one goes first
        engine.link_add(_p2p(link))
    for c in of("route"):
        node, dst = c.key.split(">", 1)
        via = dict(topo.nodes[node].routes)[dst]
        _del_route(engine, c.key)
        engine.route_add(node, dst, via)
        crashpoint("topology:route")


def _has_ipv6(topo: TopologySpec, node: str) -> bool:
    """Whether the node has IPv6: a network with it, or an IPv6 route."""
    spec = topo.nodes[node]
    return any(topo.networks[c.network].ipv6 or topo.networks[c.network].subnet6
               for c in spec.connect if c.network in topo.networks) or \
        any(":" in via for _, via in spec.routes)


def _connect_all(engine: Engine, topo: TopologySpec, keys: list[str],
                 progress: Callable[[int, int], None] | None) -> None:
    """One bulk connect per network for plain connections; others one by one."""
    plain: dict[tuple, list[str]] = {}
    for key in keys:
        node, net = key.split("@", 1)
        conn = next(c for c in topo.nodes[node].connect if c.network == net)
        if conn.ip or conn.ip6 or conn.mac or conn.publish or conn.aliases or conn.host_ifname:
            engine.connect(net, [node], ConnectOptions(
                ip=conn.ip, ip6=conn.ip6, mac=conn.mac, ifname=conn.ifname,
                host_ifname=conn.host_ifname,
                ports=conn.publish, aliases=conn.aliases, create=True))
        else:
            plain.setdefault((net, conn.ifname), []).append(node)
    for (net, ifname), nodes in plain.items():
        engine.connect(net, nodes, ConnectOptions(ifname=ifname, create=True),
                       progress=progress)


# -------------------------------------------------------- links and routes
def _p2p(link: Link) -> P2PLink:
    """The engine's link for a file's link: emulation as qdiscs (netem for
    delay/jitter, which also shapes the rate; else a tbf for the rate)."""
    def end(node: str, ifname: str, ip: str, emu) -> LinkEnd:
        netem = _netem(emu) if emu.delay_ms or emu.jitter_ms else None
        return LinkEnd(node, ifname, ip, netem, 0 if netem else emu.rate_bps or 0)

    return P2PLink(link.key, end(link.a, link.a_ifname, link.a_ip, link.a_to_b),
                   end(link.b, link.b_ifname, link.b_ip, link.b_to_a))


def _netem(emu) -> k.NetemSpec:
    """Delay and jitter (and the rate, which netem shapes itself, since a
    link has one root qdisc); loss stays with the nft rule, as without netem."""
    return k.NetemSpec(delay_us=int((emu.delay_ms or 0) * 1000),
                       jitter_us=int((emu.jitter_ms or 0) * 1000),
                       rate_Bps=(emu.rate_bps or 0) // 8)


def _del_link(engine: Engine, spec: dict) -> None:
    if spec:
        engine.link_remove(spec["a"], spec["a_ifname"])


def _del_route(engine: Engine, key: str) -> None:
    node, dst = key.split(">", 1)
    engine.route_remove(node, dst)


def _apply_loss(engine: Engine, topo: TopologySpec, nodes: set[str] | None = None) -> None:
    """Packet loss, per egress interface, with an nft numgen rule in the
    node's own namespace (one table there, rewritten whole).  Only a link's
    end can hold such a table: the ends of the file's links (or ``nodes``:
    the surviving ends of links being removed, see :func:`_remove`), never
    one nft transaction per node of a thousand-node star."""
    if nodes is None:
        nodes = {end for link in topo.links for end in (link.a, link.b)}
    per_node: dict[str, list[tuple[str, float, str]]] = {n: [] for n in topo.nodes
                                                         if n in nodes}
    for link in topo.links:
        for node, ifname, emu in ((link.a, link.a_ifname, link.a_to_b),
                                  (link.b, link.b_ifname, link.b_to_a)):
            if emu.loss_pct and node in per_node:
                per_node[node].append((ifname, emu.loss_pct, link.key))
    for node, rules in per_node.items():
        engine.set_link_loss(node, rules)
        crashpoint("topology:loss-node")
