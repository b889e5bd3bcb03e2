"""``nsnet lab``: the article's lab (shared/seed/LAB.md), built with the engine.

Same names and addresses as the article: namespaces ns1/ns2, bridge
mydocker0 172.16.1.254/16, veth1/veth2 on the bridge, peers named eth0 with
172.16.1.1/16 and 172.16.1.2/16, default route via 172.16.1.254, then two
pings each way.  Each step prints the kernel state it left, read back from
the kernel rather than echoed from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import kernel as k
from .engine import Engine
from .errors import CheckFailed, Conflict
from .model import ConnectOptions, NetworkSpec, bridge_alias, veth_alias

__all__ = ["LAB_NETWORK", "LAB_NODES", "format_route", "lab_down", "lab_up"]

Out = Callable[[str], None]

# internal, no DNS: the article builds a bridge and nothing else -- no
# forwarding, NAT or name service -- so the lab adds none of them either.
LAB_NETWORK = NetworkSpec(name="mydocker0", subnet="172.16.0.0/16", gateway="172.16.1.254",
                          bridge="mydocker0", internal=True, dns=False)


@dataclass(frozen=True)
class LabNode:
    netns: str
    host_ifname: str
    ip: str


LAB_NODES = (LabNode("ns1", "veth1", "172.16.1.1"), LabNode("ns2", "veth2", "172.16.1.2"))
LAB_TOPOLOGY_NAME = "article-lab"  # = examples/article-lab.yaml: `nsnet lab` is its `up` + pings


def lab_topology():  # -> TopologySpec (imported late: the lab does not need YAML)
    from .topology import Connection, Node, TopologySpec

    nodes = {n.netns: Node(n.netns, (Connection(LAB_NETWORK.name, n.ip, None, "eth0", (), (),
                                                n.host_ifname),))
             for n in LAB_NODES}
    return TopologySpec(LAB_TOPOLOGY_NAME, {LAB_NETWORK.name: LAB_NETWORK}, nodes)


def _own_as_topology(engine: Engine) -> None:
    """Record the lab as topology article-lab, so `nsnet up/status/down` of
    examples/article-lab.yaml see it as theirs (and `nsnet lab` theirs)."""
    from .topology.apply import specs

    engine.record_topology_objects(LAB_TOPOLOGY_NAME, specs(lab_topology()).items())
_PROTO = {2: "kernel", 3: "boot", 4: "static"}
_SCOPE = {253: "link", 254: "host"}


def format_route(route: k.Route, snap: k.Snapshot) -> str:
    """A route as ``ip route`` prints it."""
    parts = [route.dst]
    if route.gateway:
        parts += ["via", route.gateway]
    parts += ["dev", snap.name_of(route.oif)]
    if route.protocol in (2, 4):
        parts += ["proto", _PROTO[route.protocol]]
    if route.scope in _SCOPE:
        parts += ["scope", _SCOPE[route.scope]]
    if route.prefsrc:
        parts += ["src", route.prefsrc]
    return " ".join(parts)


def _link_line(link: k.Link, snap: k.Snapshot) -> str:
    addrs = ", ".join(a.cidr for a in snap.addresses_of(link.name)) or "no address"
    master = f" master {snap.name_of(link.master)}" if link.master else ""
    return f"{link.index}: {link.name}{master} state {link.state}, {addrs}"


def _routes(snap: k.Snapshot, indent: str) -> list[str]:
    lines = [format_route(r, snap) for r in snap.routes]
    return [f"{indent}{line}" for line in lines] or [f"{indent}(routing table empty)"]


def _is_up(engine: Engine) -> bool:
    net = engine.find_network(LAB_NETWORK.name)
    if net is None:
        return False
    have = {(e.netns, e.host_ifname, e.ip) for e in net.endpoints}
    return all((n.netns, n.host_ifname, n.ip) in have for n in LAB_NODES)


def _preflight(engine: Engine) -> None:
    """Refuse, before touching anything, when a lab name is taken by an
    object nsnet did not create (the engine's ownership check), or by an
    nsnet network of another shape (the lab's own rule)."""
    net = engine.find_network(LAB_NETWORK.name)
    if net and (net.subnet, net.gateway, net.bridge) != (
            LAB_NETWORK.subnet, LAB_NETWORK.gateway, LAB_NETWORK.bridge):
        raise Conflict(f"an nsnet network {net.name!r} exists with another shape "
                       f"({net.subnet} via {net.gateway}); remove it first")
    ours = {e.host_ifname: veth_alias(e.id) for e in net.endpoints} if net else {}
    links: dict[str, str | None] = {
        LAB_NETWORK.bridge or "": bridge_alias(net.id) if net else None}
    links.update({n.host_ifname: ours.get(n.host_ifname) for n in LAB_NODES})
    engine.refuse_foreign(namespaces=[n.netns for n in LAB_NODES], links=links)


def lab_up(engine: Engine, out: Out, ping_count: int = 2, interval: float = 0.3) -> None:
    """Build (or re-check) the lab; raise CheckFailed if a ping direction fails."""
    with engine.exclusive():
        if _is_up(engine):
            out("The lab is already up (made by nsnet); re-checking it.")
            _show_state(engine, out)
        else:
            _preflight(engine)
            _build(engine, out)
        _own_as_topology(engine)
    _step5(engine, out, ping_count, interval)


def _build(engine: Engine, out: Out) -> None:
    made_ns: list[str] = []
    made_net = False
    try:
        known = engine.recorded_namespaces()
        todo = [n.netns for n in LAB_NODES if n.netns not in known]
        if todo:
            engine.ns_add(todo)
            made_ns = todo
        _step1(engine, out)
        if engine.find_network(LAB_NETWORK.name) is None:
            engine.network_create(LAB_NETWORK)
            made_net = True
        _step2(engine, out)
        net = engine.network(LAB_NETWORK.name)
        connected = {e.netns for e in net.endpoints}
        for step, node in enumerate(LAB_NODES, start=3):
            if node.netns not in connected:
                engine.connect(LAB_NETWORK.name, [node.netns],
                               ConnectOptions(ip=node.ip, host_ifname=node.host_ifname))
            _step_node(engine, out, step, node)
    except BaseException:
        if made_net:
            engine.network_rm(LAB_NETWORK.name, force=True)
        if made_ns:
            engine.ns_rm(made_ns)
        raise


def _step1(engine: Engine, out: Out) -> None:
    out("1. Network namespaces ns1 and ns2 "
        f"(bind-mounted under {engine.netns_dir}/, as 'ip netns add' does)")
    for node in LAB_NODES:
        snap = engine.snapshot(node.netns)
        out(f"   {node.netns}: " + "; ".join(_link_line(lk, snap) for lk in snap.links))
        out(f"   {node.netns} routes:")
        for line in _routes(snap, "     "):
            out(line)


def _step2(engine: Engine, out: Out) -> None:
    spec = LAB_NETWORK
    out(f"2. Bridge {spec.bridge} in the host namespace, {spec.gateway}/16, set up")
    snap = engine.snapshot(None)
    bridge = snap.link(spec.bridge or "")
    if bridge:
        out(f"   {_link_line(bridge, snap)}")
    out("   host route: " + "; ".join(
        format_route(r, snap) for r in snap.routes if r.oif == (bridge.index if bridge else -1)))


def _step_node(engine: Engine, out: Out, step: int, node: LabNode) -> None:
    out(f"{step}. {node.netns}: veth pair {node.host_ifname} <-> eth0, {node.host_ifname} "
        f"enslaved to {LAB_NETWORK.bridge} and up, eth0 in {node.netns}")
    host = engine.snapshot(None)
    link = host.link(node.host_ifname)
    if link:
        out(f"   host: {_link_line(link, host)}")
    snap = engine.snapshot(node.netns)
    eth0 = snap.link("eth0")
    if eth0:
        out(f"   {node.netns}: {_link_line(eth0, snap)}")
    out(f"   {node.netns} routes:")
    for line in _routes(snap, "     "):
        out(line)


def _show_state(engine: Engine, out: Out) -> None:
    for step, node in enumerate(LAB_NODES, start=3):
        _step_node(engine, out, step, node)


def _step5(engine: Engine, out: Out, count: int, interval: float) -> None:
    out("5. Connectivity")
    failed = []
    for src, dst in ((LAB_NODES[0], LAB_NODES[1]), (LAB_NODES[1], LAB_NODES[0])):
        echoes = list(engine.ping(src.netns, dst.ip, count, interval, timeout=1.0))
        got = [e for e in echoes if e.rtt_ms is not None]
        loss = 100 * (count - len(got)) // count
        rtt = (f", rtt min/avg/max = {min(e.rtt_ms for e in got):.3f}/"  # type: ignore[type-var]
               f"{sum(e.rtt_ms for e in got) / len(got):.3f}/"  # type: ignore[misc]
               f"{max(e.rtt_ms for e in got):.3f} ms" if got else "")  # type: ignore[type-var]
        out(f"   {src.netns} -> {dst.ip}: {count} packets transmitted, {len(got)} received, "
            f"{loss}% packet loss{rtt}")
        if len(got) < count:
            failed.append(f"{src.netns} -> {dst.ip}")
    if failed:
        raise CheckFailed("lab connectivity failed: " + ", ".join(failed))
    out("The lab is up: try 'ip netns exec ns1 ping -c 2 172.16.1.2'. "
        "Remove it with 'nsnet lab --down'.")


def lab_down(engine: Engine, out: Out) -> None:
    """Remove exactly what the lab made (nsnet-owned objects only)."""
    with engine.exclusive():
        net = engine.find_network(LAB_NETWORK.name)
        if net:
            engine.network_rm(LAB_NETWORK.name, force=True)
            ports = ", ".join(e.host_ifname for e in net.endpoints)
            out(f"removed network {net.name} (bridge {net.bridge}" +
                (f", {ports})" if ports else ")"))
        owned = engine.owned_namespaces()
        mine = [n.netns for n in LAB_NODES if n.netns in owned]
        if mine:
            engine.ns_rm(mine)
            out("removed namespaces " + " ".join(mine))
        engine.forget_topology_objects(engine.topology_objects(LAB_TOPOLOGY_NAME))
        if not net and not mine:
            out("nothing of the lab was left to remove")
