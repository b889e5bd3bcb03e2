"""Point-to-point links between two namespaces (a topology's ``links:``),
their static routes, emulation (tc qdiscs) and the per-node loss table.

A link is made under a journaled intent like any other engine object: a
failure or a crash part-way is rolled back (the half-made veth, which has
no mark yet, goes), so the topology's records -- written before the link is
made -- find it missing and the next ``up`` makes it whole.  The mark (an
alias ``nsnet:link:KEY`` on both ends) comes last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import kernel as k
from ..crash import crashpoint
from ..model import ALIAS_PREFIX
from .context import Context, kernel_errors

__all__ = ["LINK_MARK", "LinkEnd", "Links", "P2PLink"]

LINK_MARK = f"{ALIAS_PREFIX}link:"
EMU_TABLE = "nsnet_emu"


@dataclass(frozen=True)
class LinkEnd:
    node: str
    ifname: str
    address: str  # CIDR
    netem: k.NetemSpec | None = None  # delay/jitter (and rate, shaped by netem itself)
    rate_bps: int = 0  # a tbf, when there is no netem


@dataclass(frozen=True)
class P2PLink:
    key: str
    a: LinkEnd
    b: LinkEnd


class Links:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _in_node(self, node: str, what: str, fn: Callable[[k.Rtnl], object]) -> None:
        ns = self.ctx.open_ns(node)
        try:
            with kernel_errors(what), k.open_rtnl(ns) as rt:
                fn(rt)
        finally:
            ns.close()

    def add(self, link: P2PLink) -> None:
        a, b = self.ctx.open_ns(link.a.node), self.ctx.open_ns(link.b.node)
        try:
            with kernel_errors(f"creating link {link.key}"), k.open_rtnl(a) as ra, \
                    k.open_rtnl(b) as rb:
                ra.run([k.req_new_veth(k.VethSpec(link.a.ifname, link.b.ifname, b.fd))])
                crashpoint("topology:link-veth")
                ia, ib = ra.link(link.a.ifname).index, rb.link(link.b.ifname).index
                v6 = ":" in link.a.address
                if v6:  # quiet IPv6 on both ends, written while they are down
                    k.write_sysctls(a, k.ipv6_interface_sysctls(link.a.ifname))
                    k.write_sysctls(b, k.ipv6_interface_sysctls(link.b.ifname))
                ra.run([k.req_set_link(index=ia, up=True),
                        k.req_add_addr(ia, link.a.address, nodad=v6)])
                rb.run([k.req_set_link(index=ib, up=True),
                        k.req_add_addr(ib, link.b.address, nodad=v6)])
                crashpoint("topology:link-addresses")
                for rt, index, end in ((ra, ia, link.a), (rb, ib, link.b)):
                    if end.netem:  # one netem qdisc: delay, jitter and rate
                        rt.run([k.req_netem(index, end.netem)])
                    elif end.rate_bps:
                        rt.run([k.req_tbf(index, end.rate_bps)])
                        crashpoint("topology:link-rate")
                # the mark comes last: a link killed half-made has none, so the
                # next `up` sees it missing and remakes it
                alias = f"{LINK_MARK}{link.key}"[:250]
                ra.run([k.req_set_link(index=ia, alias=alias)])
                crashpoint("topology:link-marked")
                rb.run([k.req_set_link(index=ib, alias=alias)])
        finally:
            a.close()
            b.close()

    def remove(self, node: str, ifname: str) -> None:
        """Delete the link ``ifname`` of ``node`` if it is one of nsnet's: marked,
        or a veth of that name not yet marked (one killed half-made: the node
        is nsnet's namespace)."""
        if not self.ctx.ns_exists(node):
            return

        def delete(rt: k.Rtnl) -> None:
            link = rt.link_by_name().get(ifname)
            if link and (link.alias.startswith(LINK_MARK) or
                         (not link.alias and link.kind == "veth")):
                rt.run([k.req_del_link(index=link.index)])

        self._in_node(node, f"removing link {node}:{ifname}", delete)

    def add_route(self, node: str, dst: str, via: str) -> None:
        """A static route, of the family of ``via`` (IPv6: "default" is ::/0)."""
        req = k.req_add_route6(dst, via) if ":" in via else k.req_add_route(dst, via)
        self._in_node(node, f"adding route {dst} via {via} in {node!r}",
                      lambda rt: rt.run([req]))

    def remove_route(self, node: str, dst: str) -> None:
        """``dst`` "default" is IPv4's default route; IPv6's is "::/0"."""
        req = k.req_del_route6(dst) if ":" in dst else k.req_del_route(dst)
        if self.ctx.ns_exists(node):
            self._in_node(node, f"removing route {dst} in {node!r}",
                          lambda rt: rt.batch([req]))

    def set_forwarding(self, node: str, on: bool, ipv6: bool = False) -> None:
        """IPv4 forwarding inside ``node``; with ``ipv6`` IPv6's too (a node
        with IPv6 addresses: its interfaces never accept RAs, so router
        mode changes nothing else there)."""
        ns = self.ctx.open_ns(node)
        value = "1" if on else "0"
        values = {"net/ipv4/ip_forward": value} | ({k.FORWARDING6: value} if ipv6 else {})
        try:
            with kernel_errors(f"setting forwarding in {node!r}"):
                k.write_sysctls(ns, values)
        finally:
            ns.close()

    def set_loss(self, node: str, rules: list[tuple[str, float, str]]) -> None:
        """Packet loss, per egress interface (ifname, percent, link key), with
        an nft numgen rule in the node's own namespace (one table there,
        rewritten whole)."""
        from ..firewall.nft import NftablesDriver

        ns = self.ctx.open_ns(node)
        try:
            NftablesDriver(ns).apply(loss_table(rules))
        finally:
            ns.close()


def loss_table(rules: list[tuple[str, float, str]]) -> list[dict]:
    table = {"family": "inet", "name": EMU_TABLE}
    cmds: list[dict] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    if not rules:
        return cmds
    chain = {"family": "inet", "table": EMU_TABLE, "name": "egress"}
    cmds += [{"add": {"table": table}},
             {"add": {"chain": dict(chain, type="filter", hook="postrouting", prio=0,
                                    policy="accept")}}]
    rule = {"family": "inet", "table": EMU_TABLE, "chain": "egress"}
    for ifname, pct, key in rules:
        threshold = round(pct * 10_000)  # parts per million
        expr = [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": ifname}},
                {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 1_000_000,
                                                          "offset": 0}},
                           "right": threshold}},
                {"drop": None}]
        cmds.append({"add": {"rule": dict(rule, expr=expr, comment=f"nsnet:link:{key}"[:128])}})
    return cmds
