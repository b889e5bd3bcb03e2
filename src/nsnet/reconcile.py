"""Bring the kernel back to what the state store says (reconcile), and remove
what nsnet marked but no record claims (gc).

Both first plan a list of :class:`Action` from one read of the kernel, so
``--dry-run`` prints exactly what a real run would do.  A reboot (kernel state
gone, state store intact) is the same case as any other drift: owned
namespaces, bridges and endpoints are recreated with their recorded names,
addresses and MACs; an endpoint whose *foreign* namespace vanished is
released (nsnet cannot recreate someone else's namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import kernel as k
from .firewall.rules import LOCALNET_MARK
from .model import ALIAS_PREFIX, Endpoint, Network, bridge_alias, veth_alias

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Action", "plan_gc", "plan_reconcile"]


@dataclass(frozen=True)
class Action:
    kind: str  # interrupted|bridge|netns|endpoint|release|orphan|blocked|sysctl|firewall|dns
    target: str
    detail: str
    data: tuple = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind:<11} {self.target}: {self.detail}"


def _orphans(engine: Engine, links: list[k.Link]) -> list[Action]:
    nets = {n.id for n in engine.store.networks()}
    eps = {e.id for e in engine.store.endpoints()}
    out = []
    for link in links:
        if not link.alias.startswith(ALIAS_PREFIX):
            continue
        _, kind, obj_id = [*link.alias.split(":", 2), "", ""][:3]
        claimed = obj_id in (nets if kind == "net" else eps)
        if not claimed:
            out.append(Action("orphan", link.name, f"{link.kind} marked {link.alias!r} but no "
                              "record claims it: remove", (link.name,)))
    return out


def _journal(engine: Engine) -> list[Action]:
    return [Action("interrupted", f"operation {op}", f"a {kind.replace('_', ' ')} was "
                   "interrupted: finish or roll it back") for op, kind, _ in engine.store.journal()]


def plan_gc(engine: Engine) -> list[Action]:
    return _journal(engine) + _orphans(engine, engine.rtnl.links()) + _firewall(engine, [])


def plan_reconcile(engine: Engine) -> list[Action]:
    links = engine.rtnl.links()
    actions = _journal(engine)
    by_name = {lk.name: lk for lk in links}
    owned = {n for n, (_, o) in engine.store.namespaces().items() if o}
    handed = engine.handed_off()
    for net in engine.store.networks():
        actions += _check_bridge(engine, net, by_name)
        for ep in net.endpoints:
            check = _check_handoff if ep.netns in handed else _check_endpoint
            actions += check(engine, net, ep, by_name, owned)
    with_eps = {e.netns for e in engine.store.endpoints()}
    for name in sorted(owned - with_eps):
        if not k.is_netns_mount(engine.ns_path(name)):
            actions.append(Action("netns", name, "owned namespace is missing: recreate",
                                  (name,)))
    return (actions + _orphans(engine, links) + _host_settings(engine)
            + _firewall(engine, actions) + _dns(engine))


def _dns(engine: Engine) -> list[Action]:
    """The DNS server runs iff an endpoint wants it; resolv.conf files say
    what the state says; a gateway nsnet cannot listen on needs a person."""
    from .dns import wants_dns

    wanted = wants_dns(engine.store.networks())
    pid = engine.dns.pid()
    drift = engine.resolv_drift()
    out = [Action("dns", f"{name}/resolv.conf", "missing or stale: rewrite", (name,))
           for name in drift]
    if wanted and not pid:
        out.append(Action("dns", "server", "embedded DNS server is not running: start it"))
    elif pid and wanted:  # (unwanted, it exits by itself after a short linger)
        for net, st in sorted(engine.dns.status().get("networks", {}).items()):
            if st.get("error"):
                out.append(Action("dns", f"dns {net}", f"{st['error']}: listen again (free "
                                  "the address or port first; the server also retries "
                                  "every second)"))
    return out


def _host_settings(engine: Engine) -> list[Action]:
    routed = [n for n in engine.store.networks() if not n.internal]
    if routed and k.read_sysctl(engine.host, "net/ipv4/ip_forward") != "1":
        return [Action("sysctl", "net.ipv4.ip_forward", f"off, but {routed[0].name!r} routes "
                       "traffic: turn it on", ("forwarding",))]
    return []


def _firewall(engine: Engine, planned: list[Action]) -> list[Action]:
    """nsnet's nftables tables against the state (after ``nft flush ruleset``,
    a firewall reload, or hand edits), compared by content: a rule whose
    verdict was edited or a port whose DNAT target changed is drift even with
    the count unchanged.  Released endpoints change it too."""
    drift = engine.firewall_differences()
    if drift or any(a.kind == "release" for a in planned):
        what = (f"{len(drift)} object(s) (rules, sets and their elements, chains) differ "
                f"from the state, by content: {_shorten(drift[0])}"
                f"{' ...' if len(drift) > 1 else ''}") if drift else \
            "released endpoints publish ports"
        return [Action("firewall", "nftables", f"{what}: rebuild nsnet's tables",
                       tuple(drift))]
    return []


def _shorten(line: str, limit: int = 300) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


def _check_bridge(engine: Engine, net: Network, links: dict[str, k.Link]) -> list[Action]:
    link = links.get(net.bridge)
    if link is None:
        return [Action("bridge", net.bridge, f"bridge of network {net.name!r} is missing: "
                       "recreate", (net.name,))]
    if link.alias != bridge_alias(net.id):
        return [Action("blocked", net.bridge, f"a link nsnet did not create holds the name of "
                       f"network {net.name!r}'s bridge: remove or rename it")]
    snap_addrs = {a.cidr for a in engine.rtnl.addresses() if a.index == link.index}
    if f"{net.gateway}/{net.prefixlen}" not in snap_addrs or not link.up:
        return [Action("bridge", net.bridge, "gateway address or up state missing: repair",
                       (net.name,))]
    if not k.loopback_guarded(engine.rtnl, link.index, LOCALNET_MARK):
        return [Action("bridge", net.bridge, "loopback guard (tc filter dropping 127.0.0.0/8) "
                       "missing: repair", (net.name,))]
    from .engine import bridge_sysctls  # (engine imports this module)

    wrong = sorted(key for key, value in bridge_sysctls(net).items()
                   if _sysctl(engine, key) not in (value, None))
    if wrong:  # e.g. route_localnet, which the localhost port path needs
        return [Action("bridge", net.bridge, f"sysctl {', '.join(wrong)} not as nsnet set it: "
                       "repair", (net.name,))]
    return []


def _sysctl(engine: Engine, key: str) -> str | None:
    """None where the kernel has no such key (e.g. built without IPv6)."""
    try:
        return k.read_sysctl(engine.host, key)
    except FileNotFoundError:
        return None


def _check_endpoint(engine: Engine, net: Network, ep: Endpoint, links: dict[str, k.Link],
                    owned: set[str]) -> list[Action]:
    if not k.is_netns_mount(engine.ns_path(ep.netns)):
        if ep.netns in owned:
            return [Action("netns", ep.netns, "owned namespace is missing: recreate",
                           (ep.netns,)),
                    Action("endpoint", f"{ep.netns}/{ep.ifname}", f"recreate on {net.name} "
                           f"with {ep.address}", (net.name, ep.id))]
        return [Action("release", f"{ep.netns}/{ep.ifname}", f"namespace not created by nsnet "
                       f"is gone: release {ep.ip} on {net.name}", (ep.id,))]
    host = links.get(ep.host_ifname)
    bridge = links.get(net.bridge)
    if host and host.alias != veth_alias(ep.id):
        return [Action("blocked", ep.host_ifname, "a link nsnet did not create holds this "
                       "endpoint's host interface name")]
    if host and bridge and host.master == bridge.index and host.up and \
            _inside_ok(engine, ep):
        return []
    return [Action("endpoint", f"{ep.netns}/{ep.ifname}", f"missing or broken: recreate on "
                   f"{net.name} with {ep.address}", (net.name, ep.id))]


def _check_handoff(engine: Engine, net: Network, ep: Endpoint, links: dict[str, k.Link],
                   owned: set[str]) -> list[Action]:
    """An endpoint whose inside another manager (Docker) holds: nsnet checks
    its host end only; gone means its namespace died, so release it (the
    manager's own delete then finds nothing left to do)."""
    host = links.get(ep.host_ifname)
    bridge = links.get(net.bridge)
    if host is None:
        return [Action("release", f"{ep.netns}/{ep.host_ifname}", f"handed-off endpoint's "
                       f"veth pair is gone: release {ep.ip} on {net.name}", (ep.id,))]
    if host.alias != veth_alias(ep.id):
        return [Action("blocked", ep.host_ifname, "a link nsnet did not create holds this "
                       "endpoint's host interface name")]
    if bridge and host.master == bridge.index and host.up:
        return []
    return [Action("blocked", ep.host_ifname, f"handed-off endpoint {ep.netns!r} is off "
                   f"bridge {net.bridge} or down; its manager must recreate it")]


def _inside_ok(engine: Engine, ep: Endpoint) -> bool:
    snap = engine.snapshot(ep.netns)
    link = snap.link(ep.ifname)
    if link is None or not link.up or ep.address not in {
            a.cidr for a in snap.addresses_of(ep.ifname)}:
        return False
    return not ep.default_route or any(r.is_default and r.gateway == ep.gateway
                                       for r in snap.routes)
