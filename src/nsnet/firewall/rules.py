"""nftables rules as data: pure builders of JSON commands (libnftables-json(5)).

Layout -- one ``ip nsnet`` table and one ``bridge nsnet`` table, never
anything else.  Everything that grows with the number of networks,
endpoints or published ports is a *map element* or a *per-network chain*,
so it is added and removed by key/name (no rule handles to look up), costs
the same for the 10,000th as for the 1st, and packets pay one hash lookup
whatever the count::

  ip nsnet
    guard       prerouting/raw  drop 127.0.0.0/8 arriving on any interface but lo, before
                                any DNAT (a LAN neighbour's 127.0.0.1:PORT; route_localnet
                                is on for nsnet's bridges: CVE-2020-8558)
    localnet    prerouting/0    mark replies (de-NATed to 127.0.0.1) of the host's own
                                localhost connections: the bridges' tc guard passes them
    prerouting  nat/dstnat      return for @internal bridges and @gateways destinations,
                                else dnat via @ports_any_* (host-local daddr) / @ports_ip_*
    output      nat/dstnat      the same for the host's own connections (127.0.0.1)
    input       filter          iifname vmap @in_from (internal-<net>: DNS to its gateway
                                only, and replies)
    forward     filter          iifname/oifname vmap @internal (sealed: own bridge only),
                                established/related + DNATed accepted, then
                                iifname vmap @fwd_in (from-<net>), oifname vmap @fwd_out (drop)
    postrouting nat/srcnat      oifname vmap @post_out (into-<net>: localhost/hairpin SNAT)
                                jump masq (one rule per masquerading network, rewritten
                                whole by each network change: nft 1.0.6's JSON parser
                                cannot fill an interval map created in the same batch)
  bridge nsnet
    forward     filter          iifname @noicc oifname @noicc drop  (--no-icc)

IPv6 (#16) lives in a third table, ``ip6 nsnet``, with the same layout
(the same set, map and chain names, so one reads like the other), built by
the ``*6`` functions and added to a transaction only for networks that have
an IPv6 subnet: an IPv4-only network's commands are exactly what they were
(the golden file proves it).  Not one ``inet`` table for both: that would
rewrite every IPv4 rule nsnet has shipped, and Docker's own nftables backend
keeps ``ip`` and ``ip6`` tables apart the same way.  The ``bridge`` table's
--no-icc drop works on frames, so it covers both families already.  The
differences from IPv4, each for a reason::

  ip6 nsnet
    guard       drop ::1 arriving on any interface but lo (the kernel drops it
                too -- IPv6 has no route_localnet -- kept as the same defence)
    (no localnet chain: [::1] cannot be published, see model.validate)
    output      ::1 returns before the port maps: a DNAT of the host's own ::1
                connection could never be routed to a bridge
    input       internal-<net> also accepts neighbour discovery (hop limit 255,
                i.e. from the link itself), without which nothing on the
                network could reach its gateway at all
    forward     before fwd_in: @routed_ports (endpoint address . proto . port)
                accepted and ICMPv6 echo to @routed bridges accepted -- Docker's
                "routed" gateway mode: no NAT, only published container ports
                (and ping) reachable, directly, from anywhere
    from-<net>  first drops a source outside the network's subnet: IPv6 has
                no rp_filter, this is the anti-spoofing it would do
    into-<net>  only the hairpin masquerade (no 127.0.0.1 twin)
    masq        one rule per NAT-mode network (none for routed ones)

An IPv4-only bridge carries no IPv6 at all (disable_ipv6 on it and its
endpoints), so the kernel itself keeps IPv6 away from it; the ip6 table's
isolation covers the IPv6 networks among themselves.  The other way round
needs rules (the kernel has no switch for IPv4 on an interface): an
IPv6-only bridge is in the ip table's in_from/fwd_in/fwd_out maps with a
plain drop, so IPv4 an endpoint gives itself goes nowhere.

Published ports never capture traffic addressed to a gateway (nsnet's DNS
and the host's services as seen from a network), nor anything from an
internal network: both are one set lookup before the port maps.  The
loopback guard has a second layer that ``nft flush ruleset`` cannot remove
(a tc filter on each bridge, see :mod:`nsnet.kernel.tc`).

:func:`skeleton` creates the fixed part; its commands are all idempotent
and re-create the fixed rules (flush + add in the same atomic transaction),
so it can be put in front of any transaction to heal a missing or damaged
skeleton (the engine does when a transaction fails, or on first use).  Every
element and rule carries the owner in its comment (``nsnet:net:<id>``,
``nsnet:ep:<id>``; fixed rules ``nsnet``), which is what reconcile compares.
"""

from __future__ import annotations

from typing import Any

from ..model import V6_ANY, Network, Published, bridge_alias, veth_alias

__all__ = [
    "LOCALNET_MARK",
    "TABLE",
    "endpoints_add",
    "endpoints_remove",
    "full",
    "masquerade",
    "masquerade6",
    "network_add",
    "network_remove",
    "ports_add",
    "ports_remove",
    "skeleton",
    "skeleton6",
    "teardown",
    "teardown6",
]

TABLE = "nsnet"
# Set on replies to the host's own localhost connections to published ports
# (after de-NAT their destination is 127.0.0.1): the bridges' tc loopback
# guard lets exactly these through.  No frame from the wire carries a mark;
# a flush removes the rule, and the guard then drops them too (fails closed).
LOCALNET_MARK = 0x02000000
OWNER = "nsnet"
Cmd = dict[str, Any]


def _t(family: str = "ip", **obj: Any) -> dict[str, Any]:
    return {"family": family, "table": TABLE, **obj}


def _chain_name(kind: str, net: Network) -> str:
    return f"{kind}-{net.id[:16]}"


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _match(left: Any, right: Any, op: str = "==") -> Cmd:
    return {"match": {"op": op, "left": left, "right": right}}


def _rule(chain: str, expr: list[Any], comment: str = OWNER, family: str = "ip") -> Cmd:
    return {"add": {"rule": _t(family, chain=chain, expr=expr, comment=comment)}}


def _elem(key: Any, comment: str) -> Cmd:
    return {"elem": {"val": key, "comment": comment}}


def _elements(op: str, name: str, items: list[Any], family: str = "ip") -> list[Cmd]:
    return [{op: {"element": _t(family, name=name, elem=items)}}] if items else []


_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_PROTO_PORT = [_meta("l4proto"), {"payload": {"protocol": "th", "field": "dport"}}]
_LOOPBACK = {"prefix": {"addr": "127.0.0.0", "len": 8}}


def _prefix(cidr: str) -> dict[str, Any]:
    addr, length = cidr.split("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def _dnat(key: list[Any], maps: str) -> dict[str, Any]:
    # Address and port come from two maps with the same key: nft 1.0.6's JSON
    # parser crashes on maps whose *data* is a concatenation (addr . port).
    k = {"concat": key}
    return {"dnat": {"addr": {"map": {"key": k, "data": f"@{maps}_addr"}},
                     "port": {"map": {"key": k, "data": f"@{maps}_port"}}}}


def _dnat_rules(chain: str) -> list[Cmd]:
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    return [_rule(chain, [local, _dnat(_PROTO_PORT, "ports_any")]),
            _rule(chain, [_dnat([_DADDR, *_PROTO_PORT], "ports_ip")])]


def _not_to_gateways(chain: str) -> list[Cmd]:
    """Traffic to a gateway address is never a published port's: it is for
    nsnet's DNS or the host itself (#12.3: port 53 published on one network
    must not capture the queries another network sends to its gateway)."""
    return [_rule(chain, [_match(_DADDR, "@gateways"), {"return": None}])]


def _base_chain(name: str, kind: str, hook: str, prio: int, family: str = "ip") -> list[Cmd]:
    chain = _t(family, name=name, type=kind, hook=hook, prio=prio, policy="accept")
    return [{"add": {"chain": chain}}, {"flush": {"chain": _t(family, name=name)}}]


def skeleton(ipv6: bool = False) -> list[Cmd]:
    """The fixed part: tables, maps, base chains and their rules; with
    ``ipv6`` the ip6 table's too (:func:`skeleton6`)."""
    return _skeleton4() + (skeleton6() if ipv6 else [])


def _skeleton4() -> list[Cmd]:
    vmap = {"map": "verdict"}
    cmds: list[Cmd] = [
        {"add": {"table": {"family": "ip", "name": TABLE}}},
        {"add": {"set": _t(name="bridges", type="ifname")}},
        {"add": {"set": _t(name="internal", type="ifname")}},
        {"add": {"set": _t(name="gateways", type="ipv4_addr")}},
        {"add": {"map": _t(name="in_from", type="ifname", **vmap)}},
        {"add": {"map": _t(name="sealed", type="ifname", **vmap)}},
        {"add": {"map": _t(name="fwd_in", type="ifname", **vmap)}},
        {"add": {"map": _t(name="fwd_out", type="ifname", **vmap)}},
        {"add": {"map": _t(name="post_out", type="ifname", **vmap)}},
        {"add": {"chain": _t(name="masq")}},
    ]
    for maps, key in (("ports_any", ["inet_proto", "inet_service"]),
                      ("ports_ip", ["ipv4_addr", "inet_proto", "inet_service"])):
        cmds += [{"add": {"map": _t(name=f"{maps}_{part}", type=key, map=data)}}
                 for part, data in (("addr", "ipv4_addr"), ("port", "inet_service"))]
    cmds += _base_chain("guard", "filter", "prerouting", -300)
    cmds.append(_rule("guard", [_match(_meta("iifname"), "lo", "!="),
                                _match(_DADDR, _LOOPBACK), {"drop": None}]))
    cmds += _base_chain("localnet", "filter", "prerouting", 0)  # after the de-NAT (-100)
    mark = _meta("mark")
    cmds.append(_rule("localnet", [
        _match(_meta("iifname"), "@bridges"), _match(_DADDR, _LOOPBACK),
        _match({"ct": {"key": "direction"}}, "reply"),
        {"mangle": {"key": mark, "value": {"|": [mark, LOCALNET_MARK]}}}]))
    cmds += _base_chain("prerouting", "nat", "prerouting", -100)
    cmds.append(_rule("prerouting", [_match(_meta("iifname"), "@internal"), {"return": None}]))
    cmds += _not_to_gateways("prerouting") + _dnat_rules("prerouting")
    cmds += _base_chain("output", "nat", "output", -100)
    cmds += _not_to_gateways("output") + _dnat_rules("output")
    cmds += _base_chain("input", "filter", "input", 0)
    cmds.append(_rule("input", [{"vmap": {"key": _meta("iifname"), "data": "@in_from"}}]))
    cmds += _base_chain("forward", "filter", "forward", 0)
    cmds += [
        # internal networks first: no conntrack state or DNAT lets anything out or in
        _rule("forward", [{"vmap": {"key": _meta("iifname"), "data": "@sealed"}}]),
        _rule("forward", [{"vmap": {"key": _meta("oifname"), "data": "@sealed"}}]),
        _rule("forward", [_match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                          {"accept": None}]),
        _rule("forward", [_match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}]),
        _rule("forward", [{"vmap": {"key": _meta("iifname"), "data": "@fwd_in"}}]),
        _rule("forward", [{"vmap": {"key": _meta("oifname"), "data": "@fwd_out"}}]),
    ]
    cmds += _base_chain("postrouting", "nat", "postrouting", 100)
    cmds += [_rule("postrouting", [{"vmap": {"key": _meta("oifname"), "data": "@post_out"}}]),
             _rule("postrouting", [{"jump": {"target": "masq"}}])]
    cmds += [{"add": {"table": {"family": "bridge", "name": TABLE}}},
             {"add": {"set": _t("bridge", name="noicc", type="ifname")}}]
    cmds += _base_chain("forward", "filter", "forward", 0, "bridge")
    cmds.append(_rule("forward", [_match(_meta("iifname"), "@noicc"),
                                  _match(_meta("oifname"), "@noicc"), {"drop": None}],
                      family="bridge"))
    return cmds


def teardown() -> list[Cmd]:
    """Remove both tables (idempotent: add first, as nft has no 'delete if exists')."""
    return [{op: {"table": {"family": fam, "name": TABLE}}}
            for fam in ("ip", "bridge") for op in ("add", "delete")]


def teardown6() -> list[Cmd]:
    """Remove the ip6 table (idempotent, as :func:`teardown`)."""
    return [{op: {"table": {"family": "ip6", "name": TABLE}}} for op in ("add", "delete")]


# ----------------------------------------------------------------- networks
def _network_chains(net: Network) -> dict[str, list[list[Any]]]:
    """Per-network chains and their rules."""
    br = net.bridge
    own = _match(_meta("oifname"), br)
    chains: dict[str, list[list[Any]]] = {
        # forwarded traffic leaving the network's bridge (br_netfilter also
        # shows bridged traffic here, with oifname = the same bridge)
        _chain_name("from", net): [
            [own, {"accept" if net.icc else "drop": None}],
            [_match(_meta("oifname"), "@bridges"), {"drop": None}],  # isolation
            *([[{"drop": None}]] if net.internal else []),
        ],
        _chain_name("into", net): [
            [_match(_SADDR, _LOOPBACK), {"masquerade": None}],  # host's 127.0.0.1 -> port
            [_match({"ct": {"key": "status"}}, "dnat", "in"),
             _match(_SADDR, _prefix(net.subnet)), {"masquerade": None}],  # hairpin
        ],
    }
    if net.internal:
        chains.update(_internal_chains(net))
    return chains


def _internal_chains(net: Network) -> dict[str, list[list[Any]]]:
    """An internal network is sealed: its bridge exchanges forwarded traffic
    with itself only (whatever conntrack or a DNAT says), and the host
    accepts from it only DNS and ICMP echo to its own gateway, and replies
    (the gateway is part of the network -- the article's lab pings its
    bridge -- and an echo carries nothing beyond the host)."""
    br = net.bridge
    to_gateway = [_match(_DADDR, net.gateway),
                  _match(_meta("l4proto"), {"set": ["udp", "tcp"]}),
                  _match({"payload": {"protocol": "th", "field": "dport"}}, 53)]
    return {
        _chain_name("sealed", net): [
            [_match(_meta("iifname"), br, "!="), {"drop": None}],
            [_match(_meta("oifname"), br, "!="), {"drop": None}],
        ],
        _chain_name("internal", net): [
            [_match({"ct": {"key": "state"}}, ["established", "related"], "in"),
             {"accept": None}],
            *([[*to_gateway, {"accept": None}]] if net.dns else []),
            [_match(_DADDR, net.gateway),
             _match({"payload": {"protocol": "icmp", "field": "type"}}, "echo-request"),
             {"accept": None}],
            [{"drop": None}],
        ],
    }


def masquerade(networks: list[Network]) -> list[Cmd]:
    """The masq chain for these networks (all of them: it is rewritten whole)."""
    cmds: list[Cmd] = [{"add": {"chain": _t(name="masq")}}, {"flush": {"chain": _t(name="masq")}}]
    for net in networks:
        if net.masquerade and not net.internal and net.has_ipv4:
            cmds.append(_rule("masq", [_match(_SADDR, _prefix(net.subnet)),
                                       _match(_meta("oifname"), net.bridge, "!="),
                                       {"masquerade": None}], bridge_alias(net.id)))
    return cmds


def _network_elements(net: Network) -> list[tuple[str, list[Any]]]:
    mark = bridge_alias(net.id)
    out: list[tuple[str, list[Any]]] = [
        ("bridges", [_elem(net.bridge, mark)]),
        ("fwd_in", [[_elem(net.bridge, mark), {"jump": {"target": _chain_name("from", net)}}]]),
        ("fwd_out", [[_elem(net.bridge, mark), {"drop": None}]]),
        ("post_out", [[_elem(net.bridge, mark),
                       {"jump": {"target": _chain_name("into", net)}}]]),
        ("gateways", [_elem(net.gateway, mark)]),
    ]
    if net.internal:
        out += [
            ("internal", [_elem(net.bridge, mark)]),
            ("sealed", [[_elem(net.bridge, mark),
                         {"jump": {"target": _chain_name("sealed", net)}}]]),
            ("in_from", [[_elem(net.bridge, mark),
                          {"jump": {"target": _chain_name("internal", net)}}]]),
        ]
    return out


def _ipv4_off_elements(net: Network) -> list[tuple[str, list[Any]]]:
    """An IPv6-only network's bridge in the ip table: every IPv4 packet
    from it or into it dropped, to the host too.  Its endpoints have no IPv4
    address, but one could give itself one: without these, the host would
    forward that IPv4 (ip_forward is on for the other networks) -- out of
    even an internal network -- and accept it for its own services."""
    mark = bridge_alias(net.id)
    drop = [[_elem(net.bridge, mark), {"drop": None}]]
    return [("in_from", drop), ("fwd_in", drop), ("fwd_out", drop)]


def network_add(net: Network, others: list[Network]) -> list[Cmd]:
    """Commands adding ``net``; ``others`` are the networks already there.
    A network with IPv6 needs the ip6 skeleton (``skeleton(ipv6=True)``)."""
    cmds = _add_family(net, [*others, net], "ip") if net.has_ipv4 else [
        c for name, items in _ipv4_off_elements(net) for c in _elements("add", name, items)]
    if net.has_ipv6:
        cmds += _add_family(net, [*others, net], "ip6")
    return cmds + endpoints_add(net)


def _add_family(net: Network, networks: list[Network], fam: str) -> list[Cmd]:
    cmds = masquerade(networks) if fam == "ip" else masquerade6(networks)
    chains = _network_chains(net) if fam == "ip" else _network_chains6(net)
    for chain, rules in chains.items():
        cmds += [{"add": {"chain": _t(fam, name=chain)}},
                 {"flush": {"chain": _t(fam, name=chain)}}]
        cmds += [_rule(chain, expr, bridge_alias(net.id), fam) for expr in rules]
    elements = _network_elements(net) if fam == "ip" else _network_elements6(net)
    for name, items in elements:
        cmds += _elements("add", name, items, fam)
    return cmds


def network_remove(net: Network, others: list[Network]) -> list[Cmd]:
    """Commands removing ``net``; ``others`` are the networks that stay.
    Idempotent: elements and chains are added (as they would be) before
    being deleted, so a half-applied or already-removed network is fine.
    The last IPv6 network takes the ip6 table with it."""
    if net.has_ipv4:
        cmds = _remove_family(net, masquerade(others), _network_chains(net),
                              _network_elements(net), "ip", endpoints_remove(net))
    else:
        cmds = endpoints_remove(net) + [
            c for name, items in _ipv4_off_elements(net)
            for c in _elements("add", name, items) + _elements("delete", name, items)]
    if net.has_ipv6:
        cmds += _remove_family(net, masquerade6(others), _network_chains6(net),
                               _network_elements6(net), "ip6", [])
        if not any(o.has_ipv6 for o in others):
            cmds += teardown6()
    return cmds


def _remove_family(net: Network, masq: list[Cmd], chains_of: dict[str, Any],
                   elements: list[tuple[str, list[Any]]], fam: str,
                   before: list[Cmd]) -> list[Cmd]:
    cmds = masq + before
    chains = list(chains_of)
    cmds += [{"add": {"chain": _t(fam, name=chain)}} for chain in chains]  # elements jump there
    for name, items in elements:
        cmds += _elements("add", name, items, fam) + _elements("delete", name, items, fam)
    for chain in chains:
        cmds += [{"flush": {"chain": _t(fam, name=chain)}},
                 {"delete": {"chain": _t(fam, name=chain)}}]
    return cmds


# ------------------------------------------------------ endpoints and ports
def _noicc(net: Network, eps: Any = None) -> list[Any]:
    if net.icc:
        return []
    return [_elem(e.host_ifname, veth_alias(e.id)) for e in (net.endpoints if eps is None
                                                              else eps)]


def endpoints_add(net: Network, eps: Any = None) -> list[Cmd]:
    return _elements("add", "noicc", _noicc(net, eps), "bridge")


def endpoints_remove(net: Network, eps: Any = None) -> list[Cmd]:
    items = _noicc(net, eps)
    return _elements("add", "noicc", items, "bridge") + _elements("delete", "noicc", items,
                                                                  "bridge")


def _port_elements(pubs: list[Published]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {f"{m}_{p}": [] for m in ("ports_any", "ports_ip")
                                 for p in ("addr", "port")}
    for p in pubs:
        m = p.port
        if not p.ip or 4 not in m.families:
            continue
        key = [m.proto, m.host_port] if not m.host_ip else [m.host_ip, m.proto, m.host_port]
        maps = "ports_ip" if m.host_ip else "ports_any"
        elem = _elem({"concat": key}, veth_alias(p.endpoint))
        out[f"{maps}_addr"].append([elem, p.ip])
        out[f"{maps}_port"].append([elem, m.port])
    return out


def ports_add(pubs: list[Published]) -> list[Cmd]:
    """Elements publishing these ports: in the ip table for the IPv4 side,
    in the ip6 table (which must exist) for the IPv6 side."""
    cmds = [c for name, items in _port_elements(pubs).items()
            for c in _elements("add", name, items)]
    return cmds + [c for name, items in _port_elements6(pubs).items()
                   for c in _elements("add", name, items, "ip6")]


def ports_remove(pubs: list[Published]) -> list[Cmd]:
    cmds = [c for name, items in _port_elements(pubs).items()
            for c in _elements("add", name, items) + _elements("delete", name, items)]
    return cmds + [c for name, items in _port_elements6(pubs).items()
                   for c in _elements("add", name, items, "ip6")
                   + _elements("delete", name, items, "ip6")]


def full(networks: list[Network], pubs: list[Published]) -> list[Cmd]:
    """The whole firewall from the state store, replacing whatever is there
    (one transaction: the tables are deleted and rebuilt atomically).  The
    ip6 table is always deleted first and rebuilt only if a network has
    IPv6, so no stale one survives a rebuild."""
    if not networks:
        return teardown() + teardown6()
    ipv6 = any(n.has_ipv6 for n in networks)
    cmds = teardown() + teardown6() + skeleton(ipv6)
    for i, net in enumerate(networks):
        cmds += network_add(net, networks[:i])
    return cmds + ports_add(pubs)


# ===================================================================== IPv6
_SADDR6 = {"payload": {"protocol": "ip6", "field": "saddr"}}
_DADDR6 = {"payload": {"protocol": "ip6", "field": "daddr"}}
_LOOPBACK6 = "::1"
_ICMP6_TYPE = {"payload": {"protocol": "icmpv6", "field": "type"}}
_HOPLIMIT = {"payload": {"protocol": "ip6", "field": "hoplimit"}}
_ROUTED_KEY = {"concat": [_DADDR6, *_PROTO_PORT]}


def _dnat6_rules(chain: str) -> list[Cmd]:
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    return [_rule(chain, [local, _dnat(_PROTO_PORT, "ports_any")], family="ip6"),
            _rule(chain, [_dnat([_DADDR6, *_PROTO_PORT], "ports_ip")], family="ip6")]


def _not_to_gateways6(chain: str) -> list[Cmd]:
    return [_rule(chain, [_match(_DADDR6, "@gateways"), {"return": None}], family="ip6")]


def skeleton6() -> list[Cmd]:
    """The ip6 table's fixed part (see the module's doc for how it differs
    from the ip table's)."""
    vmap = {"map": "verdict"}
    cmds: list[Cmd] = [
        {"add": {"table": {"family": "ip6", "name": TABLE}}},
        {"add": {"set": _t("ip6", name="bridges", type="ifname")}},
        {"add": {"set": _t("ip6", name="internal", type="ifname")}},
        {"add": {"set": _t("ip6", name="routed", type="ifname")}},
        {"add": {"set": _t("ip6", name="gateways", type="ipv6_addr")}},
        {"add": {"set": _t("ip6", name="routed_ports",
                           type=["ipv6_addr", "inet_proto", "inet_service"])}},
        {"add": {"map": _t("ip6", name="in_from", type="ifname", **vmap)}},
        {"add": {"map": _t("ip6", name="sealed", type="ifname", **vmap)}},
        {"add": {"map": _t("ip6", name="fwd_in", type="ifname", **vmap)}},
        {"add": {"map": _t("ip6", name="fwd_out", type="ifname", **vmap)}},
        {"add": {"map": _t("ip6", name="post_out", type="ifname", **vmap)}},
        {"add": {"chain": _t("ip6", name="masq")}},
    ]
    for maps, key in (("ports_any", ["inet_proto", "inet_service"]),
                      ("ports_ip", ["ipv6_addr", "inet_proto", "inet_service"])):
        cmds += [{"add": {"map": _t("ip6", name=f"{maps}_{part}", type=key, map=data)}}
                 for part, data in (("addr", "ipv6_addr"), ("port", "inet_service"))]
    cmds += _base_chain("guard", "filter", "prerouting", -300, "ip6")
    cmds.append(_rule("guard", [_match(_meta("iifname"), "lo", "!="),
                                _match(_DADDR6, _LOOPBACK6), {"drop": None}], family="ip6"))
    cmds += _base_chain("prerouting", "nat", "prerouting", -100, "ip6")
    cmds.append(_rule("prerouting", [_match(_meta("iifname"), "@internal"), {"return": None}],
                      family="ip6"))
    cmds += _not_to_gateways6("prerouting") + _dnat6_rules("prerouting")
    cmds += _base_chain("output", "nat", "output", -100, "ip6")
    cmds.append(_rule("output", [_match(_DADDR6, _LOOPBACK6), {"return": None}], family="ip6"))
    cmds += _not_to_gateways6("output") + _dnat6_rules("output")
    cmds += _base_chain("input", "filter", "input", 0, "ip6")
    cmds.append(_rule("input", [{"vmap": {"key": _meta("iifname"), "data": "@in_from"}}],
                      family="ip6"))
    cmds += _base_chain("forward", "filter", "forward", 0, "ip6")
    cmds += [_rule("forward", expr, family="ip6") for expr in (
        [{"vmap": {"key": _meta("iifname"), "data": "@sealed"}}],
        [{"vmap": {"key": _meta("oifname"), "data": "@sealed"}}],
        [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}],
        [_match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}],
        # routed mode: published container ports, and ping, reachable directly
        [_match(_meta("oifname"), "@routed"), _match(_ROUTED_KEY, "@routed_ports"),
         {"accept": None}],
        [_match(_meta("oifname"), "@routed"), _match(_ICMP6_TYPE, "echo-request"),
         {"accept": None}],
        [{"vmap": {"key": _meta("iifname"), "data": "@fwd_in"}}],
        [{"vmap": {"key": _meta("oifname"), "data": "@fwd_out"}}],
    )]
    cmds += _base_chain("postrouting", "nat", "postrouting", 100, "ip6")
    cmds += [_rule("postrouting", [{"vmap": {"key": _meta("oifname"), "data": "@post_out"}}],
                   family="ip6"),
             _rule("postrouting", [{"jump": {"target": "masq"}}], family="ip6")]
    return cmds


def _network_chains6(net: Network) -> dict[str, list[list[Any]]]:
    br = net.bridge
    chains: dict[str, list[list[Any]]] = {
        _chain_name("from", net): [
            [_match(_SADDR6, _prefix(net.subnet6), "!="), {"drop": None}],  # anti-spoofing
            [_match(_meta("oifname"), br), {"accept" if net.icc else "drop": None}],
            [_match(_meta("oifname"), "@bridges"), {"drop": None}],  # isolation
            *([[{"drop": None}]] if net.internal else []),
        ],
        _chain_name("into", net): [
            [_match({"ct": {"key": "status"}}, "dnat", "in"),
             _match(_SADDR6, _prefix(net.subnet6)), {"masquerade": None}],  # hairpin
        ],
    }
    if net.internal:
        chains.update(_internal_chains6(net))
    return chains


def _internal_chains6(net: Network) -> dict[str, list[list[Any]]]:
    """As :func:`_internal_chains`, plus neighbour discovery with the
    gateway (hop limit 255: sent on the link itself, RFC 4861 7.1)."""
    br = net.bridge
    to_gateway = [_match(_DADDR6, net.gateway6),
                  _match(_meta("l4proto"), {"set": ["udp", "tcp"]}),
                  _match({"payload": {"protocol": "th", "field": "dport"}}, 53)]
    return {
        _chain_name("sealed", net): [
            [_match(_meta("iifname"), br, "!="), {"drop": None}],
            [_match(_meta("oifname"), br, "!="), {"drop": None}],
        ],
        _chain_name("internal", net): [
            [_match({"ct": {"key": "state"}}, ["established", "related"], "in"),
             {"accept": None}],
            [_match(_ICMP6_TYPE, {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
             _match(_HOPLIMIT, 255), {"accept": None}],
            *([[*to_gateway, {"accept": None}]] if net.dns else []),
            [_match(_DADDR6, net.gateway6), _match(_ICMP6_TYPE, "echo-request"),
             {"accept": None}],
            [{"drop": None}],
        ],
    }


def masquerade6(networks: list[Network]) -> list[Cmd]:
    """The ip6 masq chain (rewritten whole): NAT-mode IPv6 networks only;
    a routed one's endpoints keep their own addresses."""
    chain = _t("ip6", name="masq")
    cmds: list[Cmd] = [{"add": {"chain": chain}}, {"flush": {"chain": chain}}]
    for net in networks:
        if net.has_ipv6 and net.masquerade and not net.internal and net.ipv6_mode == "nat":
            cmds.append(_rule("masq", [_match(_SADDR6, _prefix(net.subnet6)),
                                       _match(_meta("oifname"), net.bridge, "!="),
                                       {"masquerade": None}], bridge_alias(net.id), "ip6"))
    return cmds


def _network_elements6(net: Network) -> list[tuple[str, list[Any]]]:
    out = _network_elements(net)  # the same sets and maps, by the same names
    gateways = ("gateways", [_elem(net.gateway6, bridge_alias(net.id))])
    out = [gateways if name == "gateways" else (name, items) for name, items in out]
    if net.ipv6_mode == "routed" and not net.internal:
        out.append(("routed", [_elem(net.bridge, bridge_alias(net.id))]))
    return out


def _port_elements6(pubs: list[Published]) -> dict[str, list[Any]]:
    """IPv6 port elements: DNAT maps for NAT-mode networks, the
    routed_ports set (container address . proto . container port; the
    host port and address are not used, as Docker) for routed ones."""
    out: dict[str, list[Any]] = {f"{m}_{p}": [] for m in ("ports_any", "ports_ip")
                                 for p in ("addr", "port")}
    out["routed_ports"] = []
    for p in pubs:
        m = p.port
        if not p.ip6 or 6 not in m.families:
            continue
        if p.routed6:
            out["routed_ports"].append(_elem({"concat": [p.ip6, m.proto, m.port]},
                                             veth_alias(p.endpoint)))
            continue
        specific = m.host_ip not in ("", V6_ANY)
        key = [m.host_ip, m.proto, m.host_port] if specific else [m.proto, m.host_port]
        maps = "ports_ip" if specific else "ports_any"
        elem = _elem({"concat": key}, veth_alias(p.endpoint))
        out[f"{maps}_addr"].append([elem, p.ip6])
        out[f"{maps}_port"].append([elem, m.port])
    return out
