"""TopologySpec files: YAML in, a validated :class:`TopologySpec` out, or one clear
error naming the file, the line and the field -- before anything is touched.

    name: lab                       # owner of everything below
    networks:
      NAME: {subnet, gateway, ip_range, bridge, mtu, masquerade, internal, icc,
             dns, dns_servers, subnet6, gateway6, ip_range6, ipv6, ipv6_mode}
    nodes:
      NAME:
        connect: [{network, ip, ip6, mac, ifname, host_ifname, aliases, publish}]
        routes: [{dst, via}]          # either family ("default" via an IPv6 address: ::/0)
        forward: true                 # a router (IPv4 forwarding inside)
    links:                          # point-to-point veth pairs, no bridge
      - {a, b, a_ip, b_ip, a_ifname, b_ifname,       # a_ip/b_ip of either family
         emulation: {rate, delay, jitter, loss, a_to_b: {...}, b_to_a: {...}}}
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..model import (
    NetworkSpec,
    PortMap,
    check_bridge_subnet,
    parse_ip,
    parse_ports,
    parse_subnet,
    validate_dns_name,
    validate_ifname,
    validate_mac,
    validate_netns_name,
    validate_network_name,
)

__all__ = ["Connection", "Emulation", "Link", "Node", "TopologySpec", "load_topology",
           "parse_topology"]


@dataclass(frozen=True)
class Emulation:
    rate_bps: int | None = None  # bits per second
    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None

    @property
    def empty(self) -> bool:
        return self == Emulation()


@dataclass(frozen=True)
class Connection:
    network: str
    ip: str | None = None
    mac: str | None = None
    ifname: str | None = None
    aliases: tuple[str, ...] = ()
    publish: tuple[PortMap, ...] = ()
    host_ifname: str | None = None  # the veth's host end (the article's veth1)
    ip6: str | None = None  # a static IPv6 address (a network with IPv6)


@dataclass(frozen=True)
class Node:
    name: str
    connect: tuple[Connection, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # (dst CIDR, via)
    forward: bool = False  # a router: IPv4 forwarding on inside the node


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    a_ip: str  # CIDR
    b_ip: str
    a_ifname: str
    b_ifname: str
    a_to_b: Emulation = Emulation()  # shapes a's egress
    b_to_a: Emulation = Emulation()

    @property
    def key(self) -> str:
        return f"{self.a}:{self.a_ifname}--{self.b}:{self.b_ifname}"


@dataclass(frozen=True)
class TopologySpec:
    name: str
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    source: str = "<topology>"


# ------------------------------------------------------------- YAML + lines
class _Err(InvalidInput):
    pass


class _Doc:
    """Keeps the line of every YAML node so errors can point at it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Any, path: str, msg: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        raise _Err(f"{self.source}:{line}: {path}: {msg}")

    def mapping(self, node: Any, path: str, allowed: dict[str, str] | None = None) -> dict:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        out: dict[str, Any] = {}
        for key_node, value in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "keys must be plain names")
            if key in out:
                self.fail(key_node, f"{path}.{key}", "appears twice")
            if allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else \
                    f" (known: {', '.join(sorted(allowed))})"
                self.fail(key_node, f"{path}.{key}", f"unknown key{extra}")
            out[key] = value
        return out

    def seq(self, node: Any, path: str) -> list:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def scalar(self, node: Any, path: str) -> str:
        import yaml

        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith((":null",)):
            self.fail(node, path, f"expected a value, got {_kind(node)}")
        return str(node.value)

    def boolean(self, node: Any, path: str) -> bool:
        text = self.scalar(node, path).lower()
        if text in ("true", "yes", "on"):
            return True
        if text in ("false", "no", "off"):
            return False
        self.fail(node, path, f"{text!r} is not true or false")
        return False

    def integer(self, node: Any, path: str) -> int:
        text = self.scalar(node, path)
        if not re.fullmatch(r"\d+", text):
            self.fail(node, path, f"{text!r} is not a whole number")
        return int(text)

    def check(self, node: Any, path: str, fn: Any, *args: Any) -> Any:
        """Run a model validator, turning its error into file:line."""
        try:
            return fn(*args)
        except InvalidInput as exc:
            self.fail(node, path, str(exc))


def _kind(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node is None or node.tag.endswith(":null"):
        return "nothing"
    return repr(node.value)


NETWORK_KEYS = {"subnet": "", "gateway": "", "ip_range": "", "bridge": "", "mtu": "",
                "masquerade": "", "internal": "", "icc": "", "dns": "", "dns_servers": "",
                "subnet6": "", "gateway6": "", "ip_range6": "", "ipv6": "", "ipv6_mode": ""}
CONNECT_KEYS = {"network": "", "ip": "", "ip6": "", "mac": "", "ifname": "", "host_ifname": "",
                "aliases": "", "publish": ""}
NODE_KEYS = {"connect": "", "routes": "", "forward": ""}
ROUTE_KEYS = {"dst": "", "via": ""}
LINK_KEYS = {"a": "", "b": "", "a_ip": "", "b_ip": "", "a_ifname": "", "b_ifname": "",
             "emulation": ""}
EMU_KEYS = {"rate": "", "delay": "", "jitter": "", "loss": ""}
TOP_KEYS = {"name": "", "networks": "", "nodes": "", "links": ""}

_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?$", re.I)
_RATE_UNIT = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bps": 8,
              "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s)?$")


def _rate(doc: _Doc, node: Any, path: str) -> int:
    text = doc.scalar(node, path)
    m = _RATE.match(text)
    if not m:
        doc.fail(node, path, f"{text!r} is not a rate (e.g. 10mbit, 512kbit, 1gbit)")
    bps = int(float(m.group(1)) * _RATE_UNIT[(m.group(2) or "bit").lower()])
    if not 8000 <= bps <= 100 * 10**9:
        doc.fail(node, path, f"{text!r} is out of range (8kbit-100gbit)")
    return bps


def _time_ms(doc: _Doc, node: Any, path: str) -> float:
    text = doc.scalar(node, path)
    m = _TIME.match(text)
    if not m:
        doc.fail(node, path, f"{text!r} is not a duration (e.g. 50ms, 1s)")
    value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2) or "ms"]
    if value > 60_000:
        doc.fail(node, path, f"{text!r} is longer than a minute")
    return value


def _loss(doc: _Doc, node: Any, path: str) -> float:
    text = doc.scalar(node, path).rstrip("%").strip()
    try:
        value = float(text)
    except ValueError:
        doc.fail(node, path, f"{text!r} is not a percentage (e.g. 10%)")
    if not 0 <= value <= 100:
        doc.fail(node, path, f"{value}% is not between 0% and 100%")
    return value


def _emulation(doc: _Doc, node: Any, path: str) -> Emulation:
    raw = doc.mapping(node, path, EMU_KEYS)
    emu = Emulation(
        rate_bps=_rate(doc, raw["rate"], f"{path}.rate") if "rate" in raw else None,
        delay_ms=_time_ms(doc, raw["delay"], f"{path}.delay") if "delay" in raw else None,
        jitter_ms=_time_ms(doc, raw["jitter"], f"{path}.jitter") if "jitter" in raw else None,
        loss_pct=_loss(doc, raw["loss"], f"{path}.loss") if "loss" in raw else None)
    if emu.jitter_ms and not emu.delay_ms:
        doc.fail(raw["jitter"], f"{path}.jitter", "jitter needs a delay")
    if emu.jitter_ms and emu.delay_ms and emu.jitter_ms > emu.delay_ms:
        doc.fail(raw["jitter"], f"{path}.jitter", "jitter larger than the delay is "
                 "impossible (packets cannot leave before they are sent)")
    return emu


def _network(doc: _Doc, name: str, node: Any, path: str) -> NetworkSpec:
    raw = doc.mapping(node, path, NETWORK_KEYS)
    ipv6 = doc.boolean(raw["ipv6"], f"{path}.ipv6") if "ipv6" in raw else False
    if "subnet" not in raw and "subnet6" not in raw and not ipv6:
        doc.fail(node, f"{path}.subnet", "is required (or subnet6 / ipv6: true for an "
                 "IPv6-only network)")
    text = {k: doc.scalar(raw[k], f"{path}.{k}") for k in ("subnet", "gateway", "ip_range",
                                                           "bridge") if k in raw}
    if "subnet" in raw:
        doc.check(raw["subnet"], f"{path}.subnet",
                  lambda t: check_bridge_subnet(parse_subnet(t)), text["subnet"])
    if "gateway" in raw:
        doc.check(raw["gateway"], f"{path}.gateway", parse_ip, text["gateway"], "gateway")
    if "ip_range" in raw:
        doc.check(raw["ip_range"], f"{path}.ip_range", parse_subnet, text["ip_range"],
                  "ip_range")
    if "bridge" in raw:
        doc.check(raw["bridge"], f"{path}.bridge", validate_ifname, text["bridge"],
                  "bridge name")
    flags = {k: doc.boolean(raw[k], f"{path}.{k}") for k in ("masquerade", "internal", "icc",
                                                              "dns") if k in raw}
    servers = tuple(doc.check(n, f"{path}.dns_servers", lambda t: str(parse_ip(t, "server")),
                              doc.scalar(n, f"{path}.dns_servers"))
                    for n in (doc.seq(raw["dns_servers"], f"{path}.dns_servers")
                              if "dns_servers" in raw else []))
    mtu = doc.integer(raw["mtu"], f"{path}.mtu") if "mtu" in raw else None
    if mtu is not None and not 68 <= mtu <= 65535:
        doc.fail(raw["mtu"], f"{path}.mtu", f"MTU {mtu} is out of range (68-65535)")
    v6 = {k: doc.scalar(raw[k], f"{path}.{k}") for k in ("subnet6", "gateway6", "ip_range6",
                                                         "ipv6_mode") if k in raw}
    spec = NetworkSpec(name, text.get("subnet", ""), text.get("gateway"), text.get("ip_range"),
                       text.get("bridge"), mtu, flags.get("masquerade", True),
                       flags.get("internal", False), flags.get("icc", True),
                       flags.get("dns", True), servers, ipv6=ipv6 or "subnet6" in v6,
                       subnet6=v6.get("subnet6"), gateway6=v6.get("gateway6"),
                       ip_range6=v6.get("ip_range6"), ipv6_mode=v6.get("ipv6_mode", "nat"),
                       ipv4="subnet" in text)
    from ..engine.networks import plan_network

    # every field of both families checked as `network create` checks it (a
    # ULA pick stands in with a fixed prefix: the real one happens at `up`)
    doc.check(node, path, lambda: plan_network(spec, ula_global_id="0000000000"))
    return spec


def _connection(doc: _Doc, node: Any, path: str, networks: dict[str, Any]) -> Connection:
    raw = doc.mapping(node, path, CONNECT_KEYS)
    if "network" not in raw:
        doc.fail(node, f"{path}.network", "is required")
    net = doc.scalar(raw["network"], f"{path}.network")
    if net not in networks:
        hint = difflib.get_close_matches(net, networks, n=1)
        doc.fail(raw["network"], f"{path}.network", f"unknown network {net!r}"
                 + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    ip = doc.scalar(raw["ip"], f"{path}.ip") if "ip" in raw else None
    ip6 = doc.scalar(raw["ip6"], f"{path}.ip6") if "ip6" in raw else None
    for key, text, subnet in (("ip", ip, networks[net].subnet),
                              ("ip6", ip6, networks[net].subnet6)):
        if not text:
            continue
        addr = doc.check(raw[key], f"{path}.{key}", parse_ip, text, key)
        if not subnet or addr not in ipaddress.ip_network(subnet):
            doc.fail(raw[key], f"{path}.{key}", f"{text} is outside {net}'s "
                     f"{'IPv6 ' if key == 'ip6' else ''}subnet {subnet or '(none)'}")
    mac = doc.scalar(raw["mac"], f"{path}.mac") if "mac" in raw else None
    if mac:
        mac = doc.check(raw["mac"], f"{path}.mac", validate_mac, mac)
    ifname = doc.scalar(raw["ifname"], f"{path}.ifname") if "ifname" in raw else None
    if ifname:
        doc.check(raw["ifname"], f"{path}.ifname", validate_ifname, ifname)
    host_if = doc.scalar(raw["host_ifname"], f"{path}.host_ifname") \
        if "host_ifname" in raw else None
    if host_if:
        doc.check(raw["host_ifname"], f"{path}.host_ifname", validate_ifname, host_if)
    aliases = tuple(doc.check(a, f"{path}.aliases", validate_dns_name,
                              doc.scalar(a, f"{path}.aliases"))
                    for a in (doc.seq(raw["aliases"], f"{path}.aliases")
                              if "aliases" in raw else []))
    publish: tuple[PortMap, ...] = ()
    if "publish" in raw:
        specs = [doc.scalar(p, f"{path}.publish") for p in doc.seq(raw["publish"],
                                                                   f"{path}.publish")]
        publish = doc.check(raw["publish"], f"{path}.publish", parse_ports, specs, True)
        if publish and networks[net].internal:
            doc.fail(raw["publish"], f"{path}.publish", f"network {net!r} is internal: "
                     "nothing can be published on it")
    return Connection(net, ip, mac, ifname, aliases, publish, host_if, ip6)


def _node(doc: _Doc, name: str, node: Any, path: str, networks: dict[str, Any]) -> Node:
    import yaml

    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        return Node(name)
    raw = doc.mapping(node, path, NODE_KEYS)
    conns = tuple(_connection(doc, c, f"{path}.connect[{i}]", networks)
                  for i, c in enumerate(doc.seq(raw["connect"], f"{path}.connect")
                                        if "connect" in raw else []))
    seen: dict[str, int] = {}
    for i, c in enumerate(conns):
        if c.network in seen:
            doc.fail(doc.seq(raw["connect"], path)[i], f"{path}.connect[{i}]",
                     f"connects to {c.network!r} twice")
        seen[c.network] = i
    routes = []
    for i, r in enumerate(doc.seq(raw["routes"], f"{path}.routes") if "routes" in raw else []):
        rp = f"{path}.routes[{i}]"
        rr = doc.mapping(r, rp, ROUTE_KEYS)
        for key in ("dst", "via"):
            if key not in rr:
                doc.fail(r, f"{rp}.{key}", "is required")
        dst, via = doc.scalar(rr["dst"], f"{rp}.dst"), doc.scalar(rr["via"], f"{rp}.via")
        gw = doc.check(rr["via"], f"{rp}.via", parse_ip, via, "via")
        if dst == "default" and gw.version == 6:
            dst = "::/0"  # one key per family: "default" is IPv4's
        if dst != "default":
            net = doc.check(rr["dst"], f"{rp}.dst", parse_subnet, dst, "dst")
            if net.version != gw.version:
                doc.fail(rr["via"], f"{rp}.via", f"{via} and {dst} are of different "
                         "address families")
        routes.append((dst, via))
    forward = doc.boolean(raw["forward"], f"{path}.forward") if "forward" in raw else False
    return Node(name, conns, tuple(routes), forward)


def _link(doc: _Doc, node: Any, path: str, nodes: dict[str, Any]) -> Link:
    raw = doc.mapping(node, path, LINK_KEYS)
    for key in ("a", "b", "a_ip", "b_ip"):
        if key not in raw:
            doc.fail(node, f"{path}.{key}", "is required")
    a, b = doc.scalar(raw["a"], f"{path}.a"), doc.scalar(raw["b"], f"{path}.b")
    for key, name in (("a", a), ("b", b)):
        if name not in nodes:
            hint = difflib.get_close_matches(name, nodes, n=1)
            doc.fail(raw[key], f"{path}.{key}", f"unknown node {name!r}"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if a == b:
        doc.fail(raw["b"], f"{path}.b", "a link joins two different nodes")
    ips = {}
    for key in ("a_ip", "b_ip"):
        text = doc.scalar(raw[key], f"{path}.{key}")
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            doc.fail(raw[key], f"{path}.{key}", f"{text!r} is not ADDRESS/PREFIX "
                     "(e.g. 10.0.12.1/30)")
        if "/" not in text:
            doc.fail(raw[key], f"{path}.{key}", f"{text!r} must be an ADDRESS/PREFIX")
        ips[key] = iface
    if ips["a_ip"].network != ips["b_ip"].network or ips["a_ip"].ip == ips["b_ip"].ip:
        doc.fail(raw["b_ip"], f"{path}.b_ip", f"{ips['b_ip']} and {ips['a_ip']} must be "
                 "two different addresses of one subnet")
    names = {}
    for key, peer in (("a_ifname", b), ("b_ifname", a)):
        name = doc.scalar(raw[key], f"{path}.{key}") if key in raw else f"to-{peer}"[:15]
        doc.check(raw.get(key, node), f"{path}.{key}", validate_ifname, name)
        names[key] = name
    emu_ab = emu_ba = Emulation()
    if "emulation" in raw:
        ep = f"{path}.emulation"
        emu_raw = doc.mapping(raw["emulation"], ep, {**EMU_KEYS, "a_to_b": "", "b_to_a": ""})
        both = {k: v for k, v in emu_raw.items() if k in EMU_KEYS}
        import yaml

        base = _emulation(doc, yaml.MappingNode("tag:yaml.org,2002:map",
                                                [(yaml.ScalarNode("tag:yaml.org,2002:str", k),
                                                  v) for k, v in both.items()],
                                                raw["emulation"].start_mark), ep)
        emu_ab = _emulation(doc, emu_raw["a_to_b"], f"{ep}.a_to_b") if "a_to_b" in emu_raw \
            else base
        emu_ba = _emulation(doc, emu_raw["b_to_a"], f"{ep}.b_to_a") if "b_to_a" in emu_raw \
            else base
    return Link(a, b, str(ips["a_ip"]), str(ips["b_ip"]), names["a_ifname"], names["b_ifname"],
                emu_ab, emu_ba)


def parse_topology(text: str, source: str = "<topology>") -> TopologySpec:
    """Validate a whole file; raise InvalidInput with file:line on the first problem."""
    import yaml

    doc = _Doc(source)
    # libyaml when present: ~5x faster on big files, and it bounds nesting
    # (1,000 levels) where the pure-Python composer recurses until it fails
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise InvalidInput(f"{source}:{line}: not valid YAML: "
                           f"{getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise InvalidInput(f"{source}:1: not valid YAML: nested too deeply") from None
    if root is None:
        raise InvalidInput(f"{source}:1: the file is empty")
    top = doc.mapping(root, "topology", TOP_KEYS)
    if "name" not in top:
        doc.fail(root, "name", "is required (the topology's name owns what it creates)")
    name = doc.check(top["name"], "name", validate_network_name, doc.scalar(top["name"], "name"))
    networks: dict[str, NetworkSpec] = {}
    for key_node, value in (top["networks"].value if "networks" in top
                            and doc.mapping(top["networks"], "networks") is not None else []):
        net = key_node.value
        doc.check(key_node, f"networks.{net}", validate_network_name, net)
        networks[net] = _network(doc, net, value, f"networks.{net}")
    _check_overlaps(doc, networks, top.get("networks"))
    nodes: dict[str, Node] = {}
    raw_nodes = doc.mapping(top["nodes"], "nodes") if "nodes" in top else {}
    for key_node, value in (top["nodes"].value if raw_nodes else []):
        nname = key_node.value
        doc.check(key_node, f"nodes.{nname}", validate_netns_name, nname)
        nodes[nname] = _node(doc, nname, value, f"nodes.{nname}", networks)
    _check_macs(doc, nodes, top.get("nodes"))
    links = tuple(_link(doc, n, f"links[{i}]", nodes)
                  for i, n in enumerate(doc.seq(top["links"], "links") if "links" in top
                                        else []))
    _check_link_names(doc, links, top.get("links"))
    return TopologySpec(name, networks, nodes, links, source)


def _check_overlaps(doc: _Doc, networks: dict[str, NetworkSpec], node: Any) -> None:
    """Overlapping subnets and shared bridges, in O(n log n): two CIDRs either
    nest or are disjoint, so in start order a subnet overlaps an earlier one
    iff it starts before the furthest end seen so far (that subnet holds it)."""
    if not networks:
        return
    keys = {k.value: k for k, _ in node.value}
    order = {name: i for i, name in enumerate(networks)}
    # every subnet of both families (an IPv6-only network has no IPv4 one)
    nets = sorted(((ipaddress.ip_network(sub), name) for name, s in networks.items()
                   for sub in (s.subnet, s.subnet6) if sub),
                  key=lambda item: (item[0].version, int(item[0].network_address),
                                    item[0].prefixlen))
    clashes = []
    widest: tuple[Any, str] | None = None
    for net, name in nets:
        if widest and widest[0].version == net.version \
                and int(net.network_address) <= int(widest[0].broadcast_address):
            clashes.append((name, widest[1], net.version))
        if widest is None or widest[0].version != net.version \
                or int(net.broadcast_address) > int(widest[0].broadcast_address):
            widest = (net, name)
    if clashes:  # report the later one of the file, as a reader meets it
        a, b, version = min(((x, y, v) if order[x] > order[y] else (y, x, v)
                             for x, y, v in clashes), key=lambda c: order[c[0]])
        key = "subnet6" if version == 6 else "subnet"
        doc.fail(keys[a], f"networks.{a}.{key}", f"{getattr(networks[a], key)} overlaps "
                 f"network {b!r} ({getattr(networks[b], key)})")
    bridges: dict[str, str] = {}
    for name, spec in networks.items():
        if spec.bridge and spec.bridge in bridges:
            doc.fail(keys[name], f"networks.{name}.bridge",
                     f"bridge {spec.bridge!r} is used twice")
        if spec.bridge:
            bridges[spec.bridge] = name


def _check_macs(doc: _Doc, nodes: dict[str, Node], node: Any) -> None:
    """One MAC per bridge: two ports with one MAC make it flap (linear)."""
    keys = {k.value: k for k, _ in node.value} if node is not None else {}
    seen: dict[tuple[str, str], str] = {}
    for name, spec in nodes.items():
        for i, conn in enumerate(spec.connect):
            if not conn.mac:
                continue
            other = seen.setdefault((conn.network, conn.mac), name)
            if other != name:
                doc.fail(keys.get(name), f"nodes.{name}.connect[{i}].mac",
                         f"MAC address {conn.mac} is already used by node {other!r} on "
                         f"network {conn.network!r}")


def _check_link_names(doc: _Doc, links: tuple[Link, ...], node: Any) -> None:
    used: dict[tuple[str, str], int] = {}
    for i, link in enumerate(links):
        for end in ((link.a, link.a_ifname), (link.b, link.b_ifname)):
            if end in used:
                doc.fail(node.value[i], f"links[{i}]", f"node {end[0]!r} already has an "
                         f"interface {end[1]!r} (links[{used[end]}]); set a_ifname/b_ifname")
            used[end] = i


def load_topology(path: str) -> TopologySpec:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    return parse_topology(_utf8(data, path), path)


def _utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                           f"at offset {exc.start})") from None
