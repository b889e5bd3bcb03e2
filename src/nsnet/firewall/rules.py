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

from ..model import Network, Published, bridge_alias, veth_alias

__all__ = [
    "LOCALNET_MARK",
    "TABLE",
    "endpoints_add",
    "endpoints_remove",
    "full",
    "masquerade",
    "network_add",
    "network_remove",
    "ports_add",
    "ports_remove",
    "skeleton",
    "teardown",
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


def skeleton() -> list[Cmd]:
    """The fixed part: tables, maps, base chains and their rules."""
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
        if net.masquerade and not net.internal:
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


def network_add(net: Network, others: list[Network]) -> list[Cmd]:
    """Commands adding ``net``; ``others`` are the networks already there."""
    cmds = masquerade([*others, net])
    for chain, rules in _network_chains(net).items():
        cmds += [{"add": {"chain": _t(name=chain)}}, {"flush": {"chain": _t(name=chain)}}]
        cmds += [_rule(chain, expr, bridge_alias(net.id)) for expr in rules]
    for name, items in _network_elements(net):
        cmds += _elements("add", name, items)
    return cmds + endpoints_add(net)


def network_remove(net: Network, others: list[Network]) -> list[Cmd]:
    """Commands removing ``net``; ``others`` are the networks that stay.
    Idempotent: elements and chains are added (as they would be) before
    being deleted, so a half-applied or already-removed network is fine."""
    cmds = masquerade(others) + endpoints_remove(net)
    chains = list(_network_chains(net))
    cmds += [{"add": {"chain": _t(name=chain)}} for chain in chains]  # elements jump there
    for name, items in _network_elements(net):
        cmds += _elements("add", name, items) + _elements("delete", name, items)
    for chain in chains:
        cmds += [{"flush": {"chain": _t(name=chain)}}, {"delete": {"chain": _t(name=chain)}}]
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
        key = [m.proto, m.host_port] if not m.host_ip else [m.host_ip, m.proto, m.host_port]
        maps = "ports_ip" if m.host_ip else "ports_any"
        elem = _elem({"concat": key}, veth_alias(p.endpoint))
        out[f"{maps}_addr"].append([elem, p.ip])
        out[f"{maps}_port"].append([elem, m.port])
    return out


def ports_add(pubs: list[Published]) -> list[Cmd]:
    return [c for name, items in _port_elements(pubs).items()
            for c in _elements("add", name, items)]


def ports_remove(pubs: list[Published]) -> list[Cmd]:
    return [c for name, items in _port_elements(pubs).items()
            for c in _elements("add", name, items) + _elements("delete", name, items)]


def full(networks: list[Network], pubs: list[Published]) -> list[Cmd]:
    """The whole firewall from the state store, replacing whatever is there
    (one transaction: the tables are deleted and rebuilt atomically)."""
    if not networks:
        return teardown()
    cmds = teardown() + skeleton()
    for i, net in enumerate(networks):
        cmds += network_add(net, networks[:i])
    return cmds + ports_add(pubs)
