"""``nsnet doctor SRC DST[:PORT[/proto]]``: walk the path, name the broken hop.

The walk follows the packet: the source's interface, address and route (the
kernel's own lookup), its veth peer and bridge port, nsnet's policy between
the two networks, the host's forwarding and rp_filter (the kernel's input
route lookup), NAT / published ports, the destination's bridge port, veth,
interface, address, MTU, neighbour resolution (ARP: every MAC that answers),
the destination's own input route (rp_filter), the listener, and finally a
probe sent from the source with nft tracing on, whose drop verdicts name the
table, chain and rule.  Each check is a :class:`Hop`; the first failure
carries the cause in one sentence and the command that fixes it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .. import kernel as k
from ..errors import InvalidInput, NotFound
from ..kernel.probe import arp_probe, listeners, ndp_probe, tcp_connect, udp_exchange
from ..model import Endpoint, Network
from . import trace

FORWARDING = 3  # bridge port STP state
# the source address an input route lookup uses for "outside" (a
# documentation address: only looked up, never sent to), per family
OUTSIDE_PROBE_SRC = "203.0.113.1"
OUTSIDE_PROBE_SRC6 = "2001:db8:ffff::1"


@dataclass
class Hop:
    name: str
    where: str
    ok: bool
    detail: str
    cause: str = ""
    fix: str = ""
    family: int = 4  # the IP version of the walk the hop belongs to

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Diagnosis:
    src: str
    dst: str
    port: int | None
    proto: str
    hops: list[Hop] = field(default_factory=list)
    families: tuple[int, ...] = (4,)  # walked in this order (both on dual-stack)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hops)

    @property
    def failure(self) -> Hop | None:
        return next((h for h in self.hops if not h.ok), None)

    def to_dict(self) -> dict:
        first = self.failure
        return {"src": self.src, "dst": self.dst, "port": self.port, "proto": self.proto,
                "families": list(self.families), "ok": self.ok,
                "hops": [h.to_dict() for h in self.hops],
                "failure": first.to_dict() if first else None}


@dataclass
class Place:
    """One end of the path."""

    kind: str  # "ns", "host", "outside"
    label: str
    ip: str | None = None
    ep: Endpoint | None = None
    net: Network | None = None
    by_name: bool = False  # DST given as a name: resolved through DNS


def parse_target(text: str) -> tuple[str, int | None, str]:
    """``DST[:PORT[/proto]]`` -> (DST, PORT, proto); proto defaults to tcp
    with a port, icmp without."""
    proto = "icmp"
    port = None
    host = text
    if text.count(":") == 1 or (text.startswith("[") and "]:" in text):
        host, _, rest = text.rpartition(":")
        host = host.strip("[]")
        rest, _, proto_text = rest.partition("/")
        try:
            port = int(rest)
        except ValueError:
            raise InvalidInput(f"bad port in {text!r}") from None
        if not 0 < port < 65536:
            raise InvalidInput(f"port {port} is out of range")
        proto = proto_text.lower() or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidInput(f"protocol {proto_text!r} is not tcp or udp")
    return host, port, proto


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Walk:
    """State of one diagnosis: open namespaces and netlink sockets, reused.
    ``family`` is the IP version being walked: every address, subnet,
    gateway, route and sysctl below is read through it."""

    def __init__(self, engine, family: int = 4) -> None:
        self.eng = engine
        self.family = family
        self.nets = {n.name: n for n in engine.networks()}
        self.eps = engine.all_endpoints()
        self._ns: dict[str, k.Netns] = {}
        self._rt: dict[str, k.Rtnl] = {}
        self.hops: list[Hop] = []

    def close(self) -> None:
        for rt in self._rt.values():
            rt.close()
        for ns in self._ns.values():
            ns.close()

    # ------------------------------------------------------------ helpers
    def ns(self, name: str) -> k.Netns:
        if name == "host":
            return self.eng.host
        if name not in self._ns:
            self._ns[name] = self.eng.open_ns(name)
        return self._ns[name]

    def rt(self, name: str) -> k.Rtnl:
        if name not in self._rt:
            self._rt[name] = k.open_rtnl(self.ns(name))
        return self._rt[name]

    def links(self, name: str) -> dict[str, k.Link]:
        return self.rt(name).link_by_name()

    def in_ns(self, name: str, cmd: str) -> str:
        return cmd if name == "host" else f"nsnet ns exec {name} -- {cmd}"

    def on_host(self, cmd: str) -> str:
        if self.eng.host.name == "(current)":
            return cmd
        return f"nsenter --net={self.eng.host.path} {cmd}"

    def add(self, name: str, where: str, ok: bool, detail: str, cause: str = "",
            fix: str = "") -> bool:
        self.hops.append(Hop(name, where, ok, detail, cause, fix, self.family))
        return ok

    # ------------------------------------------------------------ family
    @property
    def v6(self) -> bool:
        return self.family == 6

    def cidr_of(self, ep: Endpoint) -> str:
        return ep.address6 if self.v6 else ep.address

    def ip_of(self, ep: Endpoint) -> str:
        return self.cidr_of(ep).split("/")[0]

    def subnet(self, net: Network) -> str:
        return net.subnet6 if self.v6 else net.subnet

    def gateway(self, net: Network) -> str:
        return net.gateway6 if self.v6 else net.gateway

    def addresses(self, ns: str) -> list[k.Address]:
        """The namespace's addresses of this family (IPv6: link-local aside)."""
        found = self.rt(ns).addresses(k.INET6 if self.v6 else k.INET)
        return [a for a in found if not a.address.startswith("fe80:")]

    @property
    def ip_cmd(self) -> str:
        """``ip`` as the fix commands spell it for this family."""
        return "ip -6" if self.v6 else "ip"

    @property
    def outside_src(self) -> str:
        return OUTSIDE_PROBE_SRC6 if self.v6 else OUTSIDE_PROBE_SRC

    def net_of_bridge(self, index: int) -> Network | None:
        host = self.links("host")
        name = next((n for n, lk in host.items() if lk.index == index), None)
        return next((n for n in self.nets.values() if n.bridge == name), None)

    # ------------------------------------------------------------ resolve
    def resolve(self, text: str) -> Place:
        place = self._resolve(text)
        mine = [e for e in self.eps if e.netns == place.label] if place.kind == "ns" else []
        if mine and not any(self.cidr_of(e) for e in mine):
            raise InvalidInput(f"{text}: its endpoints have no IPv{self.family} address: "
                               f"diagnose IPv{10 - self.family} (--family {10 - self.family})")
        return place

    def _resolve(self, text: str) -> Place:
        if text == "host":
            return Place("host", "host")
        if text == "outside":
            return Place("outside", "outside")
        if _is_ip(text):
            text = str(ipaddress.ip_address(text))  # fd00:0::2 is fd00::2
            ep = next((e for e in self.eps if self.ip_of(e) == text), None)
            if ep:
                return Place("ns", ep.netns, text, ep, self._net(ep))
            local = {a.address for a in self.addresses("host")}
            if text in local:
                return Place("host", "host", text)
            return Place("outside", text, text)
        ep = next((e for e in self.eps  # an endpoint: id (or a 6+ prefix), host veth name
                   if text in (e.id, e.host_ifname)
                   or (len(text) >= 6 and e.id.startswith(text))), None)
        if ep:
            return Place("ns", ep.netns, self.ip_of(ep), ep, self._net(ep))
        if "/" not in text and (any(e.netns == text for e in self.eps)
                                or self.eng.ns_exists(text)):
            return Place("ns", text, by_name=True)
        alias = [e for e in self.eps if text in e.aliases and self.cidr_of(e)]
        if alias:
            return Place("ns", alias[0].netns, self.ip_of(alias[0]), alias[0],
                         self._net(alias[0]), by_name=True)
        raise NotFound(f"{text!r} is not a namespace, endpoint, alias or address nsnet knows "
                       "(or 'host' / 'outside')")

    def _net(self, ep: Endpoint) -> Network | None:
        return next((n for n in self.nets.values() if n.id == ep.network
                     or n.name == ep.network), None)

    def pick_endpoints(self, src: Place, dst: Place) -> None:
        """For namespaces given by name: the endpoints of a shared network,
        else the source's default-route endpoint and the destination's first."""
        s_eps = [e for e in self.eps if e.netns == src.label and self.cidr_of(e)] \
            if src.kind == "ns" else []
        d_eps = [e for e in self.eps if e.netns == dst.label and self.cidr_of(e)] \
            if dst.kind == "ns" else []
        if src.kind == "ns" and src.ep is None and s_eps:
            shared = [e for e in s_eps if e.network in {d.network for d in d_eps}]
            src.ep = (shared or [e for e in s_eps if e.default_route] or s_eps)[0]
            src.ip, src.net = self.ip_of(src.ep), self._net(src.ep)
        if dst.kind == "ns" and dst.ep is None and d_eps:
            same = [e for e in d_eps if src.ep and e.network == src.ep.network]
            dst.ep = (same or d_eps)[0]
            dst.ip, dst.net = self.ip_of(dst.ep), self._net(dst.ep)


# ---------------------------------------------------------------- hops
def _interface(w: Walk, place: Place, role: str) -> bool:
    ep, ns = place.ep, place.label
    assert ep is not None
    link = w.links(ns).get(ep.ifname)
    where = f"{ns}:{ep.ifname}"
    if link is None:
        return w.add(f"{role} interface", where, False, "missing",
                     f"{ns} has no interface {ep.ifname} (its veth was deleted)",
                     "nsnet reconcile")
    if not link.up:
        return w.add(f"{role} interface", where, False, "state DOWN",
                     f"{ep.ifname} in {ns} is down",
                     w.in_ns(ns, f"ip link set {ep.ifname} up"))
    if link.state != "UP":
        return w.add(f"{role} interface", where, False, "NO-CARRIER",
                     f"{ep.ifname} in {ns} has no carrier: its veth peer {ep.host_ifname} "
                     "in the host is down",
                     w.on_host(f"ip link set {ep.host_ifname} up"))
    return w.add(f"{role} interface", where, True, f"UP, mtu {link.mtu}")


def _address(w: Walk, place: Place, role: str) -> bool:
    ep, ns = place.ep, place.label
    assert ep is not None
    link = w.links(ns)[ep.ifname]
    want = w.cidr_of(ep)
    have = [a.cidr for a in w.addresses(ns) if a.index == link.index]
    if want not in have:
        # IPv6: nodad, as nsnet adds it (no duplicate address detection wait)
        return w.add(f"{role} address", f"{ns}:{ep.ifname}", False,
                     f"has {', '.join(have) or 'no address'}",
                     f"{ep.ifname} in {ns} lost its address {want}",
                     w.in_ns(ns, f"ip addr add {want} dev {ep.ifname}"
                             + (" nodad" if w.v6 else "")))
    return w.add(f"{role} address", f"{ns}:{ep.ifname}", True, want)


def _route(w: Walk, src: Place, dst_ip: str) -> bool:
    """The kernel's output route lookup in the source namespace."""
    ep, ns = src.ep, src.label
    assert ep is not None and src.net is not None
    where = f"{ns}"
    try:
        ans = w.rt(ns).route_get(dst_ip)
    except k.NetlinkError as exc:
        return w.add("route lookup", where, False, f"ip route get {dst_ip}: {exc.strerror}",
                     f"{ns} has no route to {dst_ip} (its default route is missing)",
                     w.in_ns(ns, f"{w.ip_cmd} route add default via {w.gateway(src.net)} "
                                 f"dev {ep.ifname}"))
    oif = next((n for n, lk in w.links(ns).items() if lk.index == ans.oif), str(ans.oif))
    seen = f"{dst_ip} dev {oif}" + (f" via {ans.gateway}" if ans.gateway else "")
    if ans.type in ("unreachable", "blackhole", "prohibit"):
        return w.add("route lookup", where, False, f"{dst_ip}: {ans.type}",
                     f"{ns}'s route to {dst_ip} is of type {ans.type}",
                     w.in_ns(ns, f"{w.ip_cmd} route del {dst_ip}"))
    gateway = w.gateway(src.net)
    in_subnet = ipaddress.ip_address(dst_ip) in ipaddress.ip_network(w.subnet(src.net))
    if in_subnet and oif != ep.ifname:
        return w.add("route lookup", where, False, seen,
                     f"{ns} routes {dst_ip} out of {oif}, not {ep.ifname} on {src.net.name}",
                     w.in_ns(ns, f"{w.ip_cmd} route show match {dst_ip}"))
    if not in_subnet and ans.gateway and ans.gateway != gateway and oif == ep.ifname:
        return w.add("route lookup", where, False, seen,
                     f"{ns}'s route to {dst_ip} goes via {ans.gateway}, which is not "
                     f"{src.net.name}'s gateway {gateway}",
                     w.in_ns(ns, f"{w.ip_cmd} route replace default via {gateway} "
                                 f"dev {ep.ifname}"))
    return w.add("route lookup", where, True, seen)


def _veth_peer(w: Walk, place: Place, role: str) -> bool:
    ep, net = place.ep, place.net
    assert ep is not None and net is not None
    host = w.links("host")
    link, bridge = host.get(ep.host_ifname), host.get(net.bridge)
    name = f"{role} veth peer"
    if link is None:
        return w.add(name, f"host:{ep.host_ifname}", False, "missing",
                     f"the host end {ep.host_ifname} of {place.label}'s veth is gone",
                     "nsnet reconcile")
    if not link.up:
        return w.add(name, f"host:{ep.host_ifname}", False, "state DOWN",
                     f"the host end {ep.host_ifname} of {place.label}'s veth is down",
                     w.on_host(f"ip link set {ep.host_ifname} up"))
    if bridge is None or link.master != bridge.index:
        master = next((n for n, lk in host.items() if lk.index == link.master), None)
        return w.add(name, f"host:{ep.host_ifname}", False,
                     f"master {master or 'none'}",
                     f"{ep.host_ifname} ({place.label}'s veth) is not attached to bridge "
                     f"{net.bridge}",
                     w.on_host(f"ip link set {ep.host_ifname} master {net.bridge}"))
    return w.add(name, f"host:{ep.host_ifname}", True, f"UP, port of {net.bridge}")


def _bridge_port(w: Walk, place: Place, role: str) -> bool:
    ep, net = place.ep, place.net
    assert ep is not None and net is not None
    host = w.links("host")
    bridge, port = host.get(net.bridge), host[ep.host_ifname]
    if bridge is None or not bridge.up:
        return w.add("bridge", f"host:{net.bridge}", False, "missing" if bridge is None else
                     "state DOWN", f"bridge {net.bridge} of network {net.name} is "
                     f"{'missing' if bridge is None else 'down'}",
                     "nsnet reconcile" if bridge is None else
                     w.on_host(f"ip link set {net.bridge} up"))
    state = port.port_state
    names = k.rtnl.BR_STATE_NAMES
    text = names[state] if state is not None and state < len(names) else str(state)
    flags = f"{text}, hairpin {'on' if port.hairpin else 'off'}, vlan_filtering " \
            f"{'on' if bridge.vlan_filtering else 'off'}"
    if state is not None and state != FORWARDING:
        return w.add(f"{role} bridge port", f"host:{net.bridge}/{ep.host_ifname}", False, flags,
                     f"bridge port {ep.host_ifname} of {net.bridge} is in state {text}, "
                     "so the bridge drops its frames",
                     w.on_host(f"bridge link set dev {ep.host_ifname} state 3"))
    return w.add(f"{role} bridge port", f"host:{net.bridge}/{ep.host_ifname}", True, flags)


def _vlan(w: Walk, src: Place, dst: Place) -> bool:
    """On a VLAN-filtering bridge, the VLAN the source's untagged frames
    enter with (its port's PVID) must also be on the destination's port."""
    assert src.ep is not None and dst.ep is not None and dst.net is not None
    host = w.links("host")
    bridge = host.get(dst.net.bridge)
    if bridge is None or not bridge.vlan_filtering:
        return True  # nothing to check (the bridge port hop says vlan_filtering off)
    vlans = w.rt("host").bridge_vlans()
    s_port, d_port = host[src.ep.host_ifname], host[dst.ep.host_ifname]
    pvid = next((vid for vid, flags in vlans.get(s_port.index, [])
                 if flags & k.rtnl.BRIDGE_VLAN_INFO_PVID), None)
    where = f"host:{dst.net.bridge}/{dst.ep.host_ifname}"
    if pvid is None:
        return w.add("vlan", f"host:{dst.net.bridge}/{src.ep.host_ifname}", False, "no PVID",
                     f"bridge {dst.net.bridge} filters VLANs and port {src.ep.host_ifname} has "
                     "no PVID, so its untagged frames are dropped",
                     w.on_host(f"bridge vlan add dev {src.ep.host_ifname} vid 1 pvid untagged"))
    if pvid not in {vid for vid, _ in vlans.get(d_port.index, [])}:
        return w.add("vlan", where, False, f"VLAN {pvid} not on {dst.ep.host_ifname}",
                     f"bridge {dst.net.bridge} filters VLANs: {src.label}'s frames enter VLAN "
                     f"{pvid}, which port {dst.ep.host_ifname} ({dst.label}) is not a member of",
                     w.on_host(f"bridge vlan add dev {dst.ep.host_ifname} vid {pvid} "
                               "pvid untagged"))
    return w.add("vlan", where, True, f"both ports in VLAN {pvid}")


def _mtu(w: Walk, place: Place) -> bool:
    ep, net = place.ep, place.net
    assert ep is not None and net is not None
    seen = {f"{place.label}:{ep.ifname}": w.links(place.label)[ep.ifname].mtu,
            f"host:{ep.host_ifname}": w.links("host")[ep.host_ifname].mtu}
    bridge = w.links("host").get(net.bridge)
    if bridge:
        seen[f"host:{net.bridge}"] = bridge.mtu
    wrong = {where: mtu for where, mtu in seen.items() if mtu != net.mtu}
    if wrong:
        where, mtu = sorted(wrong.items())[0]
        ns, _, ifname = where.partition(":")
        return w.add("mtu", where, False, ", ".join(f"{a} {b}" for a, b in seen.items()),
                     f"{ifname} in {ns} has MTU {mtu} but network {net.name} uses {net.mtu}: "
                     "larger packets are dropped or fragmented on the way",
                     w.in_ns(ns, f"ip link set {ifname} mtu {net.mtu}"))
    return w.add("mtu", f"{place.label}", True, f"{net.mtu} everywhere on the path")


def _who_has(w: Walk, mac: str) -> str:
    """The namespace:interface (or host interface) owning a MAC, if nsnet can see it."""
    for ns in sorted({e.netns for e in w.eps}):
        with contextlib.suppress(NotFound, OSError):
            for name, link in w.links(ns).items():
                if link.mac == mac:
                    return f"{ns}:{name}"
    for name, link in w.links("host").items():
        if link.mac == mac:
            return f"host:{name}"
    return "an interface nsnet does not know"


def _neighbour(w: Walk, src: Place, target: str, expect_mac: str | None, owner: str) -> bool:
    ep = src.ep
    assert ep is not None
    probe, proto = (ndp_probe, "NDP") if w.v6 else (arp_probe, "ARP")
    macs = probe(w.ns(src.label).fd, ep.ifname, target, w.ip_of(ep), ep.mac)
    where = f"{src.label}:{ep.ifname}"
    if not macs:
        return w.add("neighbour", where, False, f"no {proto} reply for {target}",
                     f"nobody answers {proto} for {target} ({owner}) on {src.label}'s "
                     f"{ep.ifname}", "")
    if len(macs) > 1:
        others = [m for m in macs if m != expect_mac] if expect_mac else macs[1:]
        who = [f"{m} ({_who_has(w, m)})" for m in others]
        culprit = _who_has(w, others[0])
        ns, _, ifname = culprit.partition(":")
        prefix = ipaddress.ip_interface(w.cidr_of(ep)).network.prefixlen
        fix = w.in_ns(ns, f"ip addr del {target}/{prefix} dev {ifname}") if ifname else ""
        return w.add("neighbour", where, False, f"{target} is at {', '.join(macs)}",
                     f"duplicate address: {target} ({owner}) is also claimed by "
                     f"{', '.join(who)}", fix)
    if expect_mac and macs[0] != expect_mac:
        return w.add("neighbour", where, False, f"{target} is at {macs[0]}",
                     f"{target} is answered by {macs[0]} ({_who_has(w, macs[0])}), "
                     f"not by {owner} ({expect_mac})", "")
    return w.add("neighbour", where, True, f"{target} is at {macs[0]}")


def _policy(w: Walk, src: Place, dst: Place) -> bool:
    """nsnet's own rules between the two ends (Docker's semantics)."""
    s, d = src.net, dst.net
    if s and d and s.name == d.name:
        if not s.icc and dst.kind == "ns":
            return w.add("policy", f"network {s.name}", False, "icc off",
                         f"network {s.name} was created with --no-icc: its endpoints cannot "
                         "talk to each other (only to the gateway)",
                         f"nsnet network rm {s.name} --force && nsnet network create {s.name} "
                         f"--subnet {w.subnet(s)} --icc  (then reconnect)")
        return w.add("policy", f"network {s.name}", True, "same network, icc on")
    if s and d and dst.kind == "ns":
        return w.add("policy", f"{s.name} -> {d.name}", False, "different networks",
                     f"nsnet isolates networks {s.name} and {d.name} from each other "
                     "(as Docker does)", f"nsnet connect {d.name} {src.label}")
    net = s or d
    if net and net.internal and "outside" in (src.kind, dst.kind):
        return w.add("policy", f"network {net.name}", False, "internal",
                     f"network {net.name} is --internal: nothing leaves or enters it but its "
                     "own endpoints and the gateway",
                     f"nsnet network rm {net.name} --force && nsnet network create {net.name} "
                     f"--subnet {w.subnet(net)}  (without --internal, then reconnect)")
    return w.add("policy", f"network {net.name if net else '-'}", True, "allowed")


def _forwarding(w: Walk, src_ip: str, dst_ip: str, iif: str) -> bool:
    """The host forwards: ip_forward, and the kernel's input route lookup as
    if the packet arrived on ``iif`` (this applies rp_filter: EXDEV)."""
    key = "net.ipv6.conf.all.forwarding" if w.v6 else "net.ipv4.ip_forward"
    if k.read_sysctl(w.eng.host, key.replace(".", "/")) != "1":
        return w.add("host forwarding", "host", False, f"{key} = 0",
                     f"IP{'v6' if w.v6 else ''} forwarding is off in the host, so it routes "
                     "nothing between interfaces", w.on_host(f"sysctl -w {key}=1"))
    link = w.links("host").get(iif)
    try:
        ans = w.rt("host").route_get(dst_ip, src=src_ip, iif=link.index if link else 0)
    except k.NetlinkError as exc:
        if exc.errno in (errno.EXDEV, errno.EINVAL) and not w.v6 and \
                _rp_filter(w, "host", iif):
            return w.add("host forwarding", "host", False, f"rp_filter drops {src_ip} on {iif}",
                         f"reverse-path filtering (rp_filter) in the host drops packets from "
                         f"{src_ip} arriving on {iif}: its route back to {src_ip} leaves by "
                         "another interface",
                         w.on_host(f"sysctl -w net.ipv4.conf.all.rp_filter=2 "
                                   f"net.ipv4.conf.{iif}.rp_filter=2"))
        return w.add("host forwarding", "host", False, f"{exc.strerror}",
                     f"the host cannot route {dst_ip} for a packet arriving on {iif} "
                     f"({exc.strerror})", w.on_host(f"{w.ip_cmd} route get {dst_ip} from "
                                                    f"{src_ip} iif {iif}"))
    out = next((n for n, lk in w.links("host").items() if lk.index == ans.oif), str(ans.oif))
    if ans.type not in ("unicast", "local"):
        return w.add("host forwarding", "host", False, f"{dst_ip}: {ans.type}",
                     f"the host's route to {dst_ip} is of type {ans.type}", "")
    return w.add("host forwarding", "host", True,
                 f"{iif} -> {out}" + (f" via {ans.gateway}" if ans.gateway else ""))


def _rp_filter(w: Walk, ns: str, ifname: str) -> int:
    """The effective rp_filter mode of an interface: max(all, interface)."""
    values = []
    for key in ("all", ifname):
        with contextlib.suppress(OSError, ValueError):
            values.append(int(k.read_sysctl(w.ns(ns), f"net/ipv4/conf/{key}/rp_filter")))
    return max(values, default=0)


def _input_route(w: Walk, dst: Place, src_ip: str) -> bool:
    """The destination's own input lookup for the probe (rp_filter: EXDEV)."""
    ep = dst.ep
    assert ep is not None and dst.ip is not None
    link = w.links(dst.label)[ep.ifname]
    try:
        ans = w.rt(dst.label).route_get(dst.ip, src=src_ip, iif=link.index)
    except k.NetlinkError as exc:
        # a reverse-path failure: EXDEV from fib_validate_source, or EINVAL
        # ("martian source") once ip_route_input has handled it
        if exc.errno in (errno.EXDEV, errno.EINVAL) and not w.v6 and \
                _rp_filter(w, dst.label, ep.ifname):
            back, stray = _route_back(w, dst, src_ip, link.index)
            # a stray more specific route sends the replies astray too: remove
            # it; otherwise (real asymmetric routing) loose mode is the fix
            fix = f"ip route del {stray} dev {back}" if stray else (
                f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{ep.ifname}.rp_filter=2")
            return w.add("destination input", f"{dst.label}:{ep.ifname}", False,
                         f"rp_filter drops {src_ip}",
                         f"rp_filter in {dst.label} drops packets from {src_ip} arriving on "
                         f"{ep.ifname}: its route back to {src_ip} leaves by "
                         f"{back or 'another interface'}", w.in_ns(dst.label, fix))
        return w.add("destination input", f"{dst.label}:{ep.ifname}", False, exc.strerror or "",
                     f"{dst.label} refuses {dst.ip} from {src_ip} on {ep.ifname} "
                     f"({exc.strerror})", "")
    if ans.type != "local":
        return w.add("destination input", f"{dst.label}:{ep.ifname}", False, ans.type,
                     f"{dst.ip} is not a local address in {dst.label}", "")
    return w.add("destination input", f"{dst.label}:{ep.ifname}", True, "local delivery")


def _route_back(w: Walk, dst: Place, src_ip: str, arrival: int) -> tuple[str, str | None]:
    """The interface of the destination's route back to ``src_ip`` and, if
    that route is a more specific one than the arrival interface's own
    connected subnet, its prefix (a stray route)."""
    try:
        oif = w.rt(dst.label).route_get(src_ip).oif
    except k.NetlinkError:
        return "", None
    names = {lk.index: n for n, lk in w.links(dst.label).items()}
    src = ipaddress.ip_address(src_ip)
    routes = [r for r in w.rt(dst.label).routes(k.INET6 if w.v6 else k.INET)
              if r.dst != "default"
              and src in ipaddress.ip_network(r.dst, strict=False)]
    mine = [r for r in routes if r.oif == oif]
    connected = [r for r in routes if r.oif == arrival]
    if mine and connected:
        best = max(mine, key=lambda r: ipaddress.ip_network(r.dst, strict=False).prefixlen)
        return names.get(oif, str(oif)), best.dst
    return names.get(oif, str(oif)), None


def _listener(w: Walk, dst: Place, port: int, proto: str) -> bool:
    assert dst.ip is not None
    socks = listeners(w.ns(dst.label).fd)
    # a v6 wildcard socket takes IPv4 too (bindv6only off); a v4 one never IPv6
    wild = ("::",) if w.v6 else ("0.0.0.0", "::", f"::ffff:{dst.ip}")
    found = [s for s in socks if s.proto == proto and s.port == port
             and s.ip in (dst.ip, *wild)]
    if not found:
        # what does listen there: a mapping to the wrong port shows at once
        others = sorted({f"{s.port}/{s.proto}" for s in socks if s.proto == proto
                         and s.ip in (dst.ip, *wild)})
        seen = f"listening: {', '.join(others)}" if others else f"nothing on {proto}"
        return w.add("listener", f"{dst.label}", False, seen,
                     f"nothing listens on {dst.ip}:{port}/{proto} in {dst.label}"
                     + (f" (it listens on {', '.join(others)})" if others else ""),
                     w.in_ns(dst.label, f"SERVER  # start it on {wild[0]} or {dst.ip}, "
                                        f"port {port}/{proto}"))
    return w.add("listener", f"{dst.label}", True, f"{found[0].ip}:{port}/{proto}")


QTYPE = {4: 1, 6: 28}  # A, AAAA


def _dns_query(name: str, qtype: int = 1) -> tuple[int, bytes]:
    qid = random.randrange(1 << 16)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, q + struct.pack("!HH", qtype, 1)


def _name(w: Walk, src: Place, dst: Place, name: str) -> bool:
    """Resolve DST's name as SRC would: its resolv.conf's first nameserver."""
    from dnslib import DNSRecord

    path = os.path.join(w.eng.etc_netns_dir, src.label, "resolv.conf")
    try:
        with open(path) as f:
            servers = [ln.split()[1] for ln in f if ln.startswith("nameserver")]
    except OSError:
        servers = []
    if not servers:
        return w.add("name", src.label, True, f"{path} names no server: not resolved by name")
    server = servers[0]
    _qid, query = _dns_query(name, QTYPE[w.family])
    answer = udp_exchange(w.ns(src.label).fd, server, 53, query, timeout=2.0)
    ours = src.net is not None and server in src.net.gateways and src.net.dns
    if isinstance(answer, str):
        why = " (nsnet's embedded DNS server is not running)" if ours and \
            w.eng.dns.pid() is None else ""
        return w.add("name", f"{src.label} -> {server}:53", False, f"{answer}",
                     f"the DNS server {server} in {src.label}'s resolv.conf does not answer "
                     f"for {name!r}{why}", "nsnet reconcile" if ours else "")
    ips = [str(ipaddress.ip_address(str(rr.rdata))) for rr in DNSRecord.parse(answer).rr
           if rr.rtype == QTYPE[w.family]]
    if dst.ip and dst.ip not in ips:
        return w.add("name", f"{src.label} -> {server}:53", False,
                     f"{name} -> {', '.join(ips) or 'no address'}",
                     f"{server} resolves {name!r} to {', '.join(ips) or 'nothing'}, not "
                     f"{dst.ip}", f"nsnet connect {dst.net.name if dst.net else '?'} "
                     f"{src.label}" if not ips else "")
    return w.add("name", f"{src.label} -> {server}:53", True, f"{name} -> {', '.join(ips)}")


def _published(w: Walk, dst: Place, port: int | None, proto: str
               ) -> tuple[Place, int, str] | None:
    """DST is a host address with a port, or an endpoint reached from
    outside: the published mapping that takes it to an endpoint.  Returns
    (the endpoint, the port it listens on, the host address probed)."""
    if port is None:
        w.add("published port", dst.label, False, "no port given",
              "from outside, an endpoint is reached only through a published port "
              "(unsolicited traffic to its address is dropped); give DST as HOST_IP:PORT", "")
        return None
    # those reaching an address of this family, on host addresses of it
    pubs = [p for p in w.eng.ports() if (p.ip6 if w.v6 else p.ip)
            and (not p.port.host_ip or (":" in p.port.host_ip) == w.v6)]
    if dst.kind == "ns":
        match = [p for p in pubs if p.netns == dst.label and p.port.port == port
                 and p.port.proto == proto]
        if not match:
            net = dst.net.name if dst.net else "NETWORK"
            w.add("published port", f"{dst.label}:{port}/{proto}", False, "not published",
                  f"port {port}/{proto} of {dst.label} is not published, so nothing from "
                  "outside reaches it",
                  f"nsnet port add {net} {dst.label} {port}:{port}/{proto}")
            return None
    else:
        match = [p for p in pubs if p.port.host_port == port and p.port.proto == proto
                 and p.port.host_ip in ("", dst.ip, *(("::",) if w.v6 else ()))]
        if not match:
            w.add("published port", f"{dst.ip}:{port}/{proto}", False, "not published",
                  f"no nsnet published port maps {dst.ip or 'the host'}:{port}/{proto} to "
                  "an endpoint", f"nsnet port add NETWORK NS {port}:PORT/{proto}")
            return None
    pub = match[0]
    pub_ip = pub.ip6 if w.v6 else pub.ip
    host_ip = dst.ip if dst.kind == "host" and dst.ip else (
        pub.port.host_ip if pub.port.host_ip not in ("", "::") else _uplink_ip(w))
    w.add("published port", f"host:{pub.port.host_port}/{proto}", True,
          f"{pub.port.host_ip or '*'}:{pub.port.host_port} -> {pub.netns} "
          f"{pub_ip}:{pub.port.port}")
    ep = next(e for e in w.eps if e.id == pub.endpoint)
    return Place("ns", pub.netns, pub_ip, ep, w._net(ep)), pub.port.port, \
        f"{host_ip}:{pub.port.host_port}"


# ---------------------------------------------------------------- probe
def _probe(w: Walk, src: Place, dst_ip: str, port: int | None, proto: str,
           places: list[tuple[str, k.Netns, bool]], pairs: list[tuple[str, str]],
           outside: bool = False) -> None:
    """Send one probe from the source with nft tracing along the path."""
    result = ""
    with trace.traced(places, pairs) as traced:
        fd = w.ns(src.label).fd
        if port is None:
            echoes = list(k.ping(fd, dst_ip, 1, 0.2, 1.0))
            result = "reply" if echoes and echoes[0].rtt_ms is not None else "timeout"
        elif proto == "tcp":
            result = tcp_connect(fd, dst_ip, port)
        else:
            answer = udp_exchange(fd, dst_ip, port, b"nsnet doctor probe\n", timeout=1.0)
            result = answer if isinstance(answer, str) else "reply"
    verdicts = traced.verdicts
    drops = [v for v in verdicts if v.is_drop]
    if drops:
        v = drops[0]
        ns = w.ns(v.where)
        handle = trace.rule_handle(ns, v) if v.rule else None
        where = f"{v.where}: table {v.family} {v.table} chain {v.chain}"
        what = f"rule '{v.rule}'" if v.rule else f"the chain's policy {v.verdict}"
        ours = v.table == "nsnet"
        if v.rule:
            fix = f"nft delete rule {v.family} {v.table} {v.chain} handle {handle}" \
                if handle is not None else f"nft -a list chain {v.family} {v.table} {v.chain}"
        else:
            fix = f"nft 'chain {v.family} {v.table} {v.chain} {{ policy accept; }}'"
        if ours:
            fix = "nsnet reconcile"
        w.add("firewall", where, False, f"{v.verdict} by {what}",
              f"nft table {v.family} {v.table}, chain {v.chain} {v.verdict}s the probe "
              f"({what}){' -- nsnet policy' if ours else ''}",
              fix if v.where == "host" or ours else w.in_ns(v.where, fix))
    elif not _probe_answered(result, proto) and _nsnet_rules_drifted(w):
        pass  # the hop names nsnet's own table, flushed or edited by hand
    else:
        seen = len({(v.where, v.family, v.table, v.chain) for v in verdicts})
        untraced = f"; not traced: {'; '.join(traced.errors)}" if traced.errors else ""
        if src.kind == "host" and outside:
            # the host's own probe skips the forward hook a packet from
            # outside crosses; say which chains there were not exercised
            skipped = trace.foreign_chains(w.eng.host, "forward")
            untraced += "; probed from the host itself (doctor owns no outside peer), so " \
                "the forward hook was not exercised" + (
                    f": {', '.join(skipped)} not evaluated" if skipped else "")
        w.add("firewall", "path", True, f"no drop verdict ({seen} chain(s) traced){untraced}")
    good = _probe_answered(result, proto)
    cause = "" if good or drops or not w.hops[-1].ok else \
        f"the probe from {src.label} to {dst_ip} got '{result}' and no check above explains it"
    w.add("probe", f"{src.label} -> {dst_ip}" + (f":{port}/{proto}" if port else ""),
          good, result, cause, "")


def _probe_answered(result: str, proto: str) -> bool:
    return result in ("reply", "open") or (proto == "udp" and result == "timeout")


def _nsnet_rules_drifted(w: Walk) -> bool:
    """A probe lost with no drop verdict: nsnet's own table of this family
    not as its state says (flushed: no NAT, no DNAT) explains it; True once
    a failed hop says so."""
    family = "ip6" if w.v6 else "ip"
    diffs = [d for d in w.eng.firewall_differences() if ('"ip6"' in d) == w.v6]
    if not diffs:
        return False
    w.add("firewall", f"host: table {family} nsnet", False,
          f"{len(diffs)} object(s) differ from nsnet's state",
          f"nft table {family} nsnet is not what nsnet's state says ({diffs[0][:100]}"
          f"{', ...' if len(diffs) > 1 else ''}): flushed or edited by hand, so its NAT "
          "and published ports are gone", "nsnet reconcile")
    return True


# ---------------------------------------------------------------- walk
def _remote_overlay(w: Walk, src: Place, dst: Place) -> Network | None:
    """The overlay network (#17) of the source whose subnet holds an
    address no local endpoint has: the destination is on another host."""
    net = src.net
    if (net is None or net.driver != "overlay" or dst.kind != "outside" or not dst.ip
            or not w.subnet(net)
            or ipaddress.ip_address(dst.ip) not in ipaddress.ip_network(w.subnet(net))):
        return None
    return net


def _overlay_peer(w: Walk, src: Place, dst: Place, net: Network) -> bool:
    """The remote end of an overlay path: the host the cluster gives the
    address to must be alive, have published it, and this host's VXLAN
    device must hold its FDB entry (the agent programs it)."""
    ip = dst.ip or ""
    where = f"{net.name}:{ip}"
    try:
        got = w.eng.overlay_locate(net.name, ip)
    except NotFound as exc:
        return w.add("overlay peer", where, False, "unknown", str(exc),
                     "nsnet cluster status")
    host = got["host"]
    if not host:
        return w.add("overlay peer", where, False, "no host holds it",
                     f"no host of the cluster has claimed the block of {ip} in {net.name}: "
                     "no endpoint has that address", f"nsnet network inspect {net.name}")
    if not got["alive"]:
        return w.add("overlay peer", where, False, f"host {host} down",
                     f"overlay peer host {host} is down: its liveness lease expired, so the "
                     f"cluster withdrew its endpoints (its address blocks stay its own)",
                     f"on {host}: nsnet cluster agent (as a service), then nsnet reconcile")
    if got["record"] is None:
        return w.add("overlay peer", where, False, f"not on {host}",
                     f"host {host} is alive but has no endpoint with address {ip} on "
                     f"{net.name}", f"nsnet network inspect {net.name}")
    if not got["fdb"]:
        return w.add("overlay peer", where, False, "no FDB entry",
                     f"{got['vxlan']} on this host has no FDB entry for {ip} "
                     f"({got['record']['mac']} -> {got['record']['vtep']}): its agent is "
                     "not running or has not caught up", "nsnet cluster agent; nsnet reconcile")
    w.add("overlay peer", where, True,
          f"on {host} ({got['record']['vtep']}), FDB {got['record']['mac']} via {got['vxlan']}")
    replies = [e for e in w.eng.ping(src.label, ip, count=2, interval=0.2, timeout=1)
               if e.rtt_ms is not None]
    return w.add("probe", where, bool(replies),
                 "echo answered" if replies else "no echo reply",
                 "" if replies else f"the VXLAN path to {got['record']['vtep']} drops it (the "
                 "underlay between the hosts, or the peer's firewall)",
                 "" if replies else "nsnet doctor on the peer host")


def _source_side(w: Walk, src: Place, dst_ip: str) -> bool:
    return (_interface(w, src, "source") and _address(w, src, "source")
            and _route(w, src, dst_ip))


def _host_side(w: Walk, place: Place, role: str) -> bool:
    return _veth_peer(w, place, role) and _bridge_port(w, place, role)


def diagnose(engine, src_text: str, dst_text: str, family: int | None = None) -> Diagnosis:
    """Walk SRC -> DST[:PORT[/proto]] and report every hop, for ``family``
    (4 or 6) or, when None, for the family of the addresses given, else for
    every family both ends have (IPv4 then IPv6 on dual-stack; the second
    walk only if the first found nothing broken)."""
    dst_host, port, proto = parse_target(dst_text)
    if family not in (None, 4, 6):
        raise InvalidInput(f"family {family} is not 4 or 6")
    w = Walk(engine)
    try:
        families = _families(w, src_text, dst_host, family)
        diag = Diagnosis(src_text, dst_text, port, proto, families=families)
        for version in families:
            w.family = version
            _diagnose_family(w, src_text, dst_host, port, proto)
            if not all(h.ok for h in w.hops):
                break
        diag.hops = w.hops
        return diag
    finally:
        w.close()


def _families(w: Walk, src_text: str, dst_host: str, family: int | None) -> tuple[int, ...]:
    """The IP versions to walk (see :func:`diagnose`)."""
    given = {ipaddress.ip_address(t).version for t in (src_text, dst_host) if _is_ip(t)}
    if len(given) > 1:
        raise InvalidInput(f"{src_text} and {dst_host} are addresses of different families")
    if given and family and family not in given:
        raise InvalidInput(f"--family {family}, but an IPv{given.pop()} address was given")
    if given or family:
        return (family or given.pop(),)
    shared, named = {4, 6}, False
    for text in (src_text, dst_host):
        eps = [e for e in w.eps if text in (e.netns, e.id, e.host_ifname) or text in e.aliases
               or (len(text) >= 6 and e.id.startswith(text))]
        if eps:
            named = True
            shared &= {v for e in eps for v, a in ((4, e.address), (6, e.address6)) if a}
    if not shared:
        raise InvalidInput(f"{src_text} and {dst_host} share no IP family (one is IPv4-only, "
                           "the other IPv6-only)")
    # "host", "outside" and namespaces on no network alone: IPv4, as before
    return tuple(sorted(shared)) if named else (4,)


def _diagnose_family(w: Walk, src_text: str, dst_host: str, port: int | None,
                     proto: str) -> None:
    """One family's walk; its hops are added to ``w``."""
    start = len(w.hops)
    src, dst = w.resolve(src_text), w.resolve(dst_host)
    w.pick_endpoints(src, dst)
    for place, role in ((src, "source"), (dst, "destination")):
        if place.kind == "ns" and place.ep is None:
            w.add(f"{role} endpoint", place.label, False, "not connected",
                  f"namespace {place.label} is on no nsnet network",
                  f"nsnet connect NETWORK {place.label}")
    if src.kind == dst.kind == "ns" and src.label == dst.label:
        raise InvalidInput(f"SRC and DST are both {src.label}: nothing to diagnose")
    if src.kind == "outside" and dst.kind == "outside":
        raise InvalidInput("SRC and DST are both outside the host: nothing to diagnose")
    fresh = len(w.hops) == start
    overlay = _remote_overlay(w, src, dst) if fresh and port is None else None
    if overlay is not None:
        _ = (_interface(w, src, "source") and _address(w, src, "source")
             and _host_side(w, src, "source") and _overlay_peer(w, src, dst, overlay))
    elif fresh:
        _walk(w, src, dst, dst_host, port, proto)


def _walk(w: Walk, src: Place, dst: Place, dst_name: str, port: int | None, proto: str
          ) -> None:
    checks: list[Callable[[], bool]] = []
    places: list[tuple[str, k.Netns, bool]] = [("host", w.eng.host, True)]
    if dst.kind == "host" and not dst.ip:  # "host": its address facing the source
        dst.ip = w.gateway(src.net) if src.kind == "ns" and src.net else _uplink_ip(w)
    probe_ip, probe_port = dst.ip or "", port
    inbound = src.kind == "outside" and dst.kind in ("ns", "host")
    if (dst.kind == "host" and port is not None) or inbound:
        found = _published(w, dst, port, proto)
        if found is None:
            return
        dst, port, via = found
        probe_ip, _, host_port = via.rpartition(":")
        probe_port = int(host_port)
    if src.kind == "ns":
        places.append((src.label, w.ns(src.label), False))
        if dst.kind == "outside":  # nsnet's policy decides before any route does
            checks.append(lambda: _interface(w, src, "source") and _address(w, src, "source")
                          and _policy(w, src, dst) and _route(w, src, probe_ip))
        else:
            checks.append(lambda: _source_side(w, src, probe_ip))
        checks.append(lambda: _host_side(w, src, "source"))
    if dst.kind == "ns":
        places.append((dst.label, w.ns(dst.label), False))
        checks += _destination_checks(w, src, dst, port, proto)
    elif src.kind == "ns" and dst.kind == "outside":
        net = src.net
        assert net is not None
        checks.append(lambda: _neighbour(w, src, w.gateway(net), None,
                                         f"the gateway of {net.name}"))
        checks.append(lambda: _forwarding(w, src.ip or "", dst.ip or "", net.bridge))
        checks.append(lambda: w.add("nat", "host", True, _nat_mode(w, net)))
    if src.kind == "ns" and dst.kind == "ns" and dst.by_name and src.net and src.net.dns:
        # the query goes to the gateway and names the destination: once the
        # path itself is known good, a failure here is the name service's
        checks.append(lambda: _name(w, src, dst, dst_name))
    for check in checks:
        if not check():
            return
    if src.kind == "ns":
        prober = src
        sources = [src.ip or ""]
    else:  # the host sends for itself and for "outside" (doctor owns no outside peer)
        prober = Place("host", "host")
        sources = [a.address for a in w.addresses("host")]
    targets = {probe_ip, dst.ip or ""} - {""}
    if dst.net:
        sources.append(w.gateway(dst.net))  # published ports SNAT the host's own traffic to it
    pairs = [(a, b) for a in sources for b in targets] + [(b, a) for a in sources
                                                          for b in targets]
    _probe(w, prober, probe_ip, probe_port, proto, places, pairs,
           outside=src.kind == "outside")


def _destination_checks(w: Walk, src: Place, dst: Place, port: int | None, proto: str
                        ) -> list[Callable[[], bool]]:
    """Static checks first (so the first failure names the real cause),
    then the kernel's input route lookup, then ARP, then the listener."""
    # the destination's own interface first: when it is down, its veth peer
    # loses carrier and the bridge disables the port -- a consequence
    checks: list[Callable[[], bool]] = [lambda: _policy(w, src, dst),
                                        lambda: _interface(w, dst, "destination"),
                                        lambda: _host_side(w, dst, "destination"),
                                        lambda: _address(w, dst, "destination"),
                                        lambda: _mtu(w, dst)]
    if src.kind == "ns":
        checks.append(lambda: _mtu(w, src))
        if src.net and dst.net and src.net.name == dst.net.name:
            checks.append(lambda: _vlan(w, src, dst))
    if src.kind == "outside":
        checks.append(lambda: _forwarding(w, w.outside_src, dst.ip or "", _uplink(w)))
    src_ip = src.ip if src.kind == "ns" else w.outside_src if src.kind == "outside" \
        else (w.gateway(dst.net) if dst.net else "")
    checks.append(lambda: _input_route(w, dst, src_ip or ""))
    if src.kind == "ns" and src.net and dst.net and src.net.name == dst.net.name:
        owner = f"{dst.label}'s {dst.ep.ifname}" if dst.ep else dst.label
        checks.append(lambda: _neighbour(w, src, dst.ip or "", dst.ep.mac if dst.ep else None,
                                         owner))
    if port is not None:
        checks.append(lambda: _listener(w, dst, port, proto))
    return checks


def _uplink(w: Walk) -> str:
    """The host interface outside traffic enters by: the one of its default
    route, else the first with an address that is no nsnet bridge."""
    links = w.links("host")
    names = {lk.index: n for n, lk in links.items()}
    with contextlib.suppress(k.NetlinkError):
        return names.get(w.rt("host").route_get(w.outside_src).oif, "lo")
    bridges = {n.bridge for n in w.nets.values()}
    for a in w.addresses("host"):
        if names.get(a.index) not in bridges and not ipaddress.ip_address(a.address).is_loopback:
            return names[a.index]
    return "lo"


def _uplink_ip(w: Walk) -> str:
    index = w.links("host").get(_uplink(w))
    addrs = [a.address for a in w.addresses("host") if index and a.index == index.index]
    return addrs[0] if addrs else "::1" if w.v6 else "127.0.0.1"


def _nat_mode(w: Walk, net: Network) -> str:
    if w.v6 and net.ipv6_mode == "routed":
        return f"routed: no NAT, the outside needs a route to {net.subnet6}"
    return "masquerade" if net.masquerade else \
        f"no masquerade: the outside needs a route to {w.subnet(net)}"
