"""Planning decisions of the engine, table-tested without root: what a plan
decides (names, addresses, default routes, port choices, refusals, intent
contents, reconcile actions) is pure given a state view and a kernel
observation.  The kernel tests (tests/kernel) check that applying works."""

from __future__ import annotations

import pytest

from nsnet import reconcile as rc
from nsnet.engine import intents
from nsnet.engine.context import refusal, unique_ns_names
from nsnet.engine.endpoints import (
    ConnectFacts,
    check_connect_options,
    inside_name,
    plan_connect,
)
from nsnet.engine.networks import DriverFact, first_overlap, plan_network
from nsnet.engine.ports import assign_ephemeral, match_ephemeral
from nsnet.errors import AlreadyExists, Conflict, InvalidInput, NotFound, PoolExhausted
from nsnet.kernel import Address, Link, Route, Snapshot
from nsnet.model import ConnectOptions, Endpoint, Network, NetworkSpec, PortMap, Published


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("spec, field, want", [
    (NetworkSpec("a", "10.1.0.0/24"), "gateway", "10.1.0.1"),
    (NetworkSpec("a", "10.1.0.0/24"), "mtu", 1500),
    (NetworkSpec("a", "10.1.0.0/24", mtu=9000), "mtu", 9000),
    (NetworkSpec("a", "10.1.0.0/24"), "bridge", "br-0123456789ab"),
    (NetworkSpec("a", "10.1.0.0/24", bridge="mybr"), "bridge", "mybr"),
    (NetworkSpec("a", "10.1.0.0/24", dns_servers=("9.9.9.9",)), "dns_servers", ("9.9.9.9",)),
    (NetworkSpec("a", "10.1.0.0/24", aux_addresses=(("r", "10.1.0.5"),)), "aux_addresses",
     (("r", "10.1.0.5"),)),
    (NetworkSpec("a", "10.1.0.0/24", labels=(("k", "1"), ("k", "2"))), "labels", (("k", "2"),)),
])
def test_network_plan(spec, field, want):
    net = plan_network(spec, net_id="0123456789abcdef", now=1.0)
    assert getattr(net, field) == want


@pytest.mark.parametrize("spec, error", [
    (NetworkSpec("a", "fd00::/64"), "is not an IPv4 subnet"),
    (NetworkSpec("a", ""), "an IPv4 --subnet is needed"),
    (NetworkSpec("a", "", ipv4=False), "needs --ipv6 or an IPv6 --subnet"),
    (NetworkSpec("a", "10.1.0.0/24", ipv4=False, subnet6="fd00:1::/64"), "takes no IPv4"),
    (NetworkSpec("a", "10.1.0.0/24", ipv6_mode="routed"), "--ipv6-mode applies"),
    (NetworkSpec("a", "10.1.0.0/24", ipv6_mode="bridged", ipv6=True, subnet6="fd00::/64"),
     "IPv6 mode"),
    (NetworkSpec("a", "10.1.0.0/24", subnet6="10.2.0.0/24"), "not an IPv6 subnet"),
    (NetworkSpec("a", "10.1.0.0/24", subnet6="fd00:1::/64", gateway6="fd00:2::1"),
     "outside subnet"),
    (NetworkSpec("a", "10.1.0.0/24", aux_addresses=(("", "10.1.0.5"),)), "the name is empty"),
    (NetworkSpec("a", "10.1.0.0/24", aux_addresses=(("g", "10.1.0.1"),)), "is the gateway"),
    (NetworkSpec("a", "10.1.0.0/24", aux_addresses=(("x", "10.1.0.5"), ("x", "10.1.0.6"))),
     "given twice"),
    (NetworkSpec("a", "10.1.0.0/24", labels=(("bad key", "1"),)), "label key"),
    (NetworkSpec("a", "10.1.0.0/24", bridge="x" * 16), "bridge name"),
])
def test_network_plan_refusals(spec, error):
    with pytest.raises(InvalidInput, match=error):
        plan_network(spec)


def _net(name="front", subnet="10.1.0.0/24", **kw) -> Network:
    return Network("id-" + name, name, "br-" + name, subnet, subnet.rsplit(".", 1)[0] + ".1",
                   subnet, 1500, 0.0, **kw)


@pytest.mark.parametrize("subnet, routes, want", [
    ("10.2.0.0/24", [], None),
    ("10.1.0.0/16", [], "overlaps network 'front' (10.1.0.0/24)"),
    ("10.1.0.128/25", [], "overlaps network 'front'"),
    ("192.168.5.0/24", [("192.168.0.0/16", "eth0")], "overlaps route 192.168.0.0/16 dev eth0"),
    ("192.168.5.0/24", [("10.9.0.0/16", "eth0")], None),
])
def test_subnet_overlap(subnet, routes, want):
    why = first_overlap(subnet, [_net()], routes)
    assert (why is None) if want is None else (want in why)


# ----------------------------------------------------------------- endpoints
@pytest.mark.parametrize("wanted, present, has_default, want", [
    (None, set(), False, ("eth0", True)),
    (None, {"lo", "eth0"}, True, ("eth1", False)),
    (None, {"eth0", "eth1", "eth3"}, False, ("eth2", True)),
    ("net1", {"eth0"}, True, ("net1", False)),
])
def test_inside_name_and_default_route(wanted, present, has_default, want):
    assert inside_name("ns", wanted, present, has_default) == want


def test_inside_name_taken_is_refused():
    with pytest.raises(AlreadyExists, match="already has an interface 'eth0'"):
        inside_name("ns", "eth0", {"eth0"}, False)


@pytest.mark.parametrize("opts, count, error", [
    (ConnectOptions(ip="10.1.0.9"), 2, "--ip applies to one namespace; 2 were given"),
    (ConnectOptions(mac="02:00:00:00:00:01"), 3, "--mac applies to one namespace"),
    (ConnectOptions(host_ifname="vx"), 2, "--host-ifname applies to one namespace"),
    (ConnectOptions(ports=(PortMap("tcp", "", 80, 80),)), 2, "--publish applies"),
    (ConnectOptions(mac="nope"), 1, "MAC"),
    (ConnectOptions(ip="10.1.0.999"), 1, "--ip"),
    (ConnectOptions(aliases=("bad name",)), 1, "not a valid DNS name"),
])
def test_connect_option_refusals(opts, count, error):
    with pytest.raises(InvalidInput, match=error):
        check_connect_options(opts, count)


def test_aliases_are_normalised_once():
    opts = check_connect_options(ConnectOptions(aliases=("Web.", "DB")), 1)
    assert opts.aliases == ("web", "db")


@pytest.mark.parametrize("names, error", [
    ([], "no namespace name given"),
    (["a", "b", "a"], "namespace 'a' is named twice"),
    (["ok", "../x"], "namespace name"),
])
def test_namespace_names(names, error):
    with pytest.raises(InvalidInput, match=error):
        unique_ns_names(names)


@pytest.mark.parametrize("bad, names, want", [
    (["a"], ["a"], "namespace 'a' already exists"),
    (["a", "b"], ["a", "b"], "namespaces 'a', 'b' already exist; nothing was created"),
    (["b"], ["a", "b"], "namespace 'b' already exists; nothing was created ('a' left as "
                        "they were: all or nothing)"),
])
def test_bulk_refusal_names_every_offender(bad, names, want):
    assert refusal(bad, "already exists", "already exist", names, "created") == want


# --------------------------------------------------------------------- ports
def _pm(text_proto="tcp", host_ip="", host_port=0, port=80) -> PortMap:
    return PortMap(text_proto, host_ip, host_port, port)


@pytest.mark.parametrize("ports, busy, want", [
    ((_pm(),), set(), (32768,)),
    ((_pm(),), {("tcp", 32768), ("tcp", 32769)}, (32770,)),
    ((_pm(), _pm(port=81)), set(), (32768, 32769)),
    ((_pm("udp"),), {("tcp", 32768)}, (32768,)),
    ((_pm(host_port=32768), _pm()), set(), (32768, 32769)),  # asked-for ports are busy too
])
def test_ephemeral_ports_take_the_lowest_free(ports, busy, want):
    got = assign_ephemeral(ports, busy, 32768, 32799)
    assert tuple(m.host_port for m in got) == want


def test_ephemeral_range_exhausted():
    with pytest.raises(PoolExhausted, match="no free ephemeral host port in 10-11/tcp"):
        assign_ephemeral((_pm(),), {("tcp", 10), ("tcp", 11)}, 10, 11)


def test_port_zero_names_every_mapping_of_that_port():
    held = {_pm(host_port=32768): None, _pm(host_port=32769): None,
            _pm(host_port=8080, port=81): None}
    assert match_ephemeral((_pm(),), held) == (_pm(host_port=32768), _pm(host_port=32769))
    assert match_ephemeral((_pm(port=99),), held) == (_pm(port=99),)


# ------------------------------------------------------------------- intents
@pytest.mark.parametrize("intent", [
    intents.ConnectIntent((intents.EndpointRef("e1", "veth1", "ns1"),), ("ns1",)),
    intents.NsAddIntent(create_ns=("a", "b")),
    intents.ConnectIntent((intents.EndpointRef("e1", "veth1", "m1"),), (), ("m1",), 7),
    intents.NetworkCreateIntent("n1", "br-n1"),
    intents.NetworkCreateIntent("n1", "br-n1", forwarding_was_off=True),
    intents.PortsIntent(),
    intents.DeleteIntent(("e1",), ("ns1",), intents.NetworkRef("n1", "br-n1")),
    intents.DeleteIntent(("e1",)),
    intents.DnsIntent(("ns1", "ns2")),
    intents.LinkIntent("s1", "to-s2"),
])
def test_intents_round_trip_by_name(intent):
    kind, payload = intents.encode(intent)
    assert kind == intent.kind
    assert not any(isinstance(v, list) and v and isinstance(v[0], list)
                   for v in payload.values())  # named, not positional
    assert intents.decode(kind, payload) == intent


@pytest.mark.parametrize("kind, payload, want", [
    ("connect", {"endpoints": [["e1", "veth1", "ns1"]], "create_ns": ["ns1"]},
     intents.ConnectIntent((intents.EndpointRef("e1", "veth1", "ns1"),), ("ns1",))),
    ("ns_add", {"endpoints": [], "create_ns": ["a"]}, intents.NsAddIntent(create_ns=("a",))),
    ("delete", {"endpoints": ["e1"], "namespaces": [], "network": ["n1", "br-n1"]},
     intents.DeleteIntent(("e1",), (), intents.NetworkRef("n1", "br-n1"))),
    ("delete", {"endpoints": [], "namespaces": [], "network": None}, intents.DeleteIntent()),
    ("network_create", {"id": "n1", "bridge": "br-n1"}, intents.NetworkCreateIntent("n1",
                                                                                   "br-n1")),
    ("ports", {}, intents.PortsIntent()),
    ("dns", {"namespaces": ["a"]}, intents.DnsIntent(("a",))),
])
def test_journals_of_the_older_positional_format_still_decode(kind, payload, want):
    assert intents.decode(kind, payload) == want


def test_which_way_each_intent_is_settled():
    assert {cls.kind for cls in intents.KINDS.values() if cls.forward} == {"delete", "dns"}


# ----------------------------------------------------------------- reconcile
IFF_UP = 1


def _link(index, name, kind="veth", up=True, master=0, alias="") -> Link:
    return Link(index, name, kind, IFF_UP if up else 0, 1500, master, "", alias, 0, None)


def _ep(netns, ep_id, host, net="front", default_route=True) -> Endpoint:
    return Endpoint(ep_id, net, netns, "eth0", host, "10.1.0.2/24", "02:00:00:00:00:02",
                    "10.1.0.1", default_route, 0.0)


class FakeServices:
    """State and kernel observations as plain data; repairs recorded."""

    def __init__(self, nets=(), links=(), owned=(), handed=(), mounted=(), facts=None,
                 inside=None, forwarding=True, fw_drift=(), resolv=(), journal=(),
                 forwarding6=True):
        self.nets, self.links, self.owned, self.handed = list(nets), list(links), set(owned), \
            set(handed)
        self.mounted, self.facts, self.inside = set(mounted), facts or {}, inside or {}
        self.forwarding, self.fw_drift, self.resolv = forwarding, list(fw_drift), list(resolv)
        self.journal = list(journal)
        self.forwarding6 = forwarding6
        self.done: list[tuple] = []

    def networks(self):
        return self.nets

    def endpoints(self):
        return [e for n in self.nets for e in n.endpoints]

    def owned_namespaces(self):
        return self.owned

    def handed_off(self):
        return self.handed

    def pending_intents(self):
        return self.journal

    def host_links(self):
        return self.links

    def ns_exists(self, name):
        return name in self.mounted

    def snapshot(self, netns):
        return self.inside[netns]

    def endpoint_view(self, netns, ifname, version=4):
        if netns not in self.mounted:  # as the engine's: entering it fails
            raise NotFound(f"namespace {netns!r} does not exist")
        return self.inside[netns]

    def network_facts(self, net, links):
        return self.facts.get(net.name, [])

    def forwarding_on(self):
        return self.forwarding

    def forwarding6_on(self):
        return self.forwarding6

    def firewall_differences(self):
        return self.fw_drift

    def resolv_drift(self):
        return self.resolv

    def dns_wanted(self):
        return False

    def dns_pid(self):
        return None

    def dns_status(self):
        return {}

    def __getattr__(self, verb):  # repairs: recorded in order
        return lambda *args: self.done.append((verb, *args)) or set()


def _front(*eps, **kw) -> Network:
    net = _net(**kw)
    return Network(**{**net.__dict__, "endpoints": tuple(eps)})


def _v6case(v4=True, addr6=True, route6=True, gw6="fd00:1::1", route4=True, internal=False,
            **svc_kw) -> dict:
    """FakeServices arguments for one endpoint of a dual-stack (or, v4=False,
    IPv6-only) network whose host end is in place; the inside as asked."""
    from dataclasses import replace

    ep = replace(_ep("ns1", "e1", "veth1"), address6="fd00:1::2/64", gateway6="fd00:1::1")
    if not v4:
        ep = replace(ep, address="", gateway="")
    net = _net(subnet6="fd00:1::/64", gateway6="fd00:1::1", ip_range6="fd00:1::/64",
               internal=internal)
    if not v4:
        net = replace(net, subnet="", gateway="", ip_range="")
    addrs = ([Address(2, "10.1.0.2", 24)] if v4 else []) + \
        ([Address(2, "fd00:1::2", 64)] if addr6 else [])
    routes = ([Route("default", "10.1.0.1", 2, 4, 0, None)] if v4 and route4 else []) + \
        ([Route("default", gw6, 2, 4, 0, None)] if route6 else [])
    return {"nets": [replace(net, endpoints=(ep,))], "mounted": {"ns1"}, "owned": {"ns1"},
            "inside": {"ns1": Snapshot([_link(1, "lo"), _link(2, "eth0")], addrs, routes)},
            "links": [_link(5, "br-front", "bridge", alias="nsnet:net:id-front"),
                      _link(6, "veth1", master=5, alias="nsnet:ep:e1")], **svc_kw}


def test_ipv6_forwarding_off_is_repaired_by_its_own_verb():
    svc = FakeServices(**_v6case(forwarding6=False))
    plan = rc.plan_reconcile(svc)
    assert [a.target for a in plan] == ["net.ipv6.conf.all.forwarding"]
    rc.apply(svc, plan)
    assert svc.done == [("ensure_forwarding6",)]


def _healthy_inside():
    return Snapshot([_link(1, "lo"), _link(2, "eth0")],
                    [__import__("nsnet").kernel.Address(2, "10.1.0.2", 24)],
                    [__import__("nsnet").kernel.Route("default", "10.1.0.1", 2, 4, 0, None)])


def test_reconcile_of_a_healthy_state_plans_nothing():
    ep = _ep("ns1", "e1", "veth1")
    svc = FakeServices(nets=[_front(ep)], mounted={"ns1"}, owned={"ns1"},
                       links=[_link(5, "br-front", "bridge", alias="nsnet:net:id-front"),
                              _link(6, "veth1", master=5, alias="nsnet:ep:e1")],
                       inside={"ns1": _healthy_inside()})
    assert rc.plan_reconcile(svc) == []


def test_reconcile_does_not_stat_a_namespace_it_has_read():
    """Entering the namespace proves it exists: a healthy endpoint costs no
    separate existence check (5000 of them were ~0.1 s)."""
    ep = _ep("ns1", "e1", "veth1")
    svc = FakeServices(nets=[_front(ep)], mounted={"ns1"}, owned={"ns1"},
                       links=[_link(5, "br-front", "bridge", alias="nsnet:net:id-front"),
                              _link(6, "veth1", master=5, alias="nsnet:ep:e1")],
                       inside={"ns1": _healthy_inside()})
    asked = []
    svc.ns_exists = lambda name: asked.append(name) or name in svc.mounted
    assert rc.plan_reconcile(svc) == [] and asked == []


@pytest.mark.parametrize("case, svc_kw, kinds", [
    ("owned namespace gone (a reboot)", {"mounted": set(), "owned": {"ns1"}},
     ["netns", "endpoint"]),
    ("foreign namespace gone", {"mounted": set(), "owned": set()}, ["release", "firewall"]),
    # host end in place: the inside is read first, and its failure decides
    ("owned namespace gone, host end still there", {
        "mounted": set(), "owned": {"ns1"}, "inside": {"ns1": _healthy_inside()},
        "links": [_link(5, "br-front", "bridge"),
                  _link(6, "veth1", master=5, alias="nsnet:ep:e1")]}, ["netns", "endpoint"]),
    ("foreign namespace gone, host end still there", {
        "mounted": set(), "owned": set(), "inside": {"ns1": _healthy_inside()},
        "links": [_link(5, "br-front", "bridge"),
                  _link(6, "veth1", master=5, alias="nsnet:ep:e1")]}, ["release", "firewall"]),
    ("inside broken, host end in place", {
        "mounted": {"ns1"}, "owned": {"ns1"}, "inside": {"ns1": Snapshot([], [], [])},
        "links": [_link(5, "br-front", "bridge"),
                  _link(6, "veth1", master=5, alias="nsnet:ep:e1")]}, ["endpoint"]),
    ("host end missing", {"mounted": {"ns1"}, "owned": {"ns1"},
                          "links": [_link(5, "br-front", "bridge")]}, ["endpoint"]),
    ("host end name held by someone else", {
        "mounted": {"ns1"}, "owned": {"ns1"},
        "links": [_link(5, "br-front", "bridge"), _link(6, "veth1", master=5)]}, ["blocked"]),
    ("an orphan nsnet link", {
        "mounted": {"ns1"}, "owned": {"ns1"}, "inside": {"ns1": _healthy_inside()},
        "links": [_link(5, "br-front", "bridge"), _link(6, "veth1", master=5,
                                                        alias="nsnet:ep:e1"),
                  _link(7, "vethold", alias="nsnet:ep:gone")]}, ["orphan"]),
    ("forwarding off", {"mounted": {"ns1"}, "owned": {"ns1"}, "forwarding": False,
                        "inside": {"ns1": _healthy_inside()},
                        "links": [_link(5, "br-front", "bridge"),
                                  _link(6, "veth1", master=5, alias="nsnet:ep:e1")]},
     ["sysctl"]),
    ("bridge missing (driver fact)", {
        "mounted": {"ns1"}, "owned": {"ns1"}, "inside": {"ns1": _healthy_inside()},
        "facts": {"front": [DriverFact("br-front", "missing: recreate", True)]},
        "links": [_link(6, "veth1", alias="nsnet:ep:e1")]}, ["bridge", "endpoint"]),
    ("interrupted operation", {"mounted": {"ns1"}, "owned": {"ns1"},
                               "journal": [(3, "connect")],
                               "inside": {"ns1": _healthy_inside()},
                               "links": [_link(5, "br-front", "bridge"),
                                         _link(6, "veth1", master=5, alias="nsnet:ep:e1")]},
     ["interrupted"]),
    # IPv6 (#16): the v6 address and default route are checked as the v4 ones
    # are, IPv6 forwarding on its own key; a healthy dual-stack endpoint costs
    # nothing
    ("dual-stack, healthy", _v6case(), []),
    ("dual-stack, v6 default route gone", _v6case(route6=False), ["endpoint"]),
    ("dual-stack, v6 default route via another gateway", _v6case(gw6="fd00:1::99"),
     ["endpoint"]),
    ("dual-stack, v6 address gone", _v6case(addr6=False), ["endpoint"]),
    ("dual-stack, v4 default route gone (v6 intact)", _v6case(route4=False), ["endpoint"]),
    ("dual-stack, IPv6 forwarding off", _v6case(forwarding6=False), ["sysctl"]),
    ("dual-stack, both forwardings off", _v6case(forwarding=False, forwarding6=False),
     ["sysctl", "sysctl"]),
    ("IPv6-only, healthy, IPv4 forwarding off (not its business)",
     _v6case(v4=False, forwarding=False), []),
    ("IPv6-only, v6 default route gone", _v6case(v4=False, route6=False), ["endpoint"]),
    ("IPv6-only, IPv6 forwarding off", _v6case(v4=False, forwarding6=False), ["sysctl"]),
    ("internal dual-stack, forwarding off: nothing routes", _v6case(
        internal=True, forwarding=False, forwarding6=False), []),
    ("dual-stack bridge lost its v6 gateway (driver fact)", _v6case(facts={"front": [
        DriverFact("br-front", "gateway address or up state missing: repair", True)]}),
     ["bridge"]),
])
def test_reconcile_plans(case, svc_kw, kinds):
    svc = FakeServices(**{"nets": [_front(_ep("ns1", "e1", "veth1"))], **svc_kw})
    assert [a.kind for a in rc.plan_reconcile(svc)] == kinds, case


def test_reconcile_applies_in_dependency_order():
    actions = [rc.RebuildFirewall("nftables", "x"), rc.RecreateEndpoint("ns1/eth0", "x",
                                                                       "front", "e1"),
               rc.RepairNetwork("br-front", "x", "front"), rc.RecreateNamespace("ns1", "x", "ns1"),
               rc.RemoveOrphan("vethold", "x", "vethold"), rc.EnableForwarding("ip_forward", "x"),
               rc.DnsDrift("ns1/resolv.conf", "x", "ns1")]
    svc = FakeServices()
    rc.apply(svc, actions)
    assert [d[0] for d in svc.done] == ["delete_links", "recreate_namespace", "repair_network",
                                        "recreate_endpoints", "ensure_forwarding", "sync_dns",
                                        "sync_firewall"]


def test_released_endpoints_resync_dns_and_firewall():
    svc = FakeServices()
    rc.apply(svc, [rc.ReleaseEndpoint("ns1/eth0", "x", "e1")])
    assert [d[0] for d in svc.done] == ["release_endpoints", "sync_dns", "sync_firewall"]


def test_action_text_is_what_the_cli_prints():
    a = rc.RecreateEndpoint("ns1/eth0", "recreate on front with 10.1.0.2/24", "front", "e1")
    assert str(a) == "endpoint    ns1/eth0: recreate on front with 10.1.0.2/24"
    assert a.kind == "endpoint"


def test_published_is_unchanged_by_planning():  # a guard for the port plan's data
    p = Published("e1", "front", "ns1", "10.1.0.2", _pm(host_port=8080))
    assert (p.port.host_port, p.network) == (8080, "front")


def test_network_plan_dual_stack_and_ipv6_only():
    """Both families planned from one spec; a v6-only network has no IPv4
    field; --ipv6 without a subnet takes the lowest free /64 of the ULA
    prefix, never a taken one; v6 upstream DNS servers are accepted."""
    net = plan_network(NetworkSpec("a", "10.1.0.0/24", subnet6="fd00:1::/64",
                                   dns_servers=("2001:db8::53",)), net_id="0" * 32, now=1.0)
    assert (net.subnet, net.gateway, net.subnet6, net.gateway6, net.ip_range6) == (
        "10.1.0.0/24", "10.1.0.1", "fd00:1::/64", "fd00:1::1", "fd00:1::/64")
    assert net.dns_servers == ("2001:db8::53",) and net.ipv6_mode == "nat"
    only = plan_network(NetworkSpec("b", "", ipv4=False, subnet6="fd00:2::/64",
                                    ipv6_mode="routed"))
    assert (only.subnet, only.gateway, only.has_ipv4, only.gateways) == ("", "", False,
                                                                           ("fd00:2::1",))
    assert only.ipv6_mode == "routed"
    ula = plan_network(NetworkSpec("c", "10.3.0.0/24", ipv6=True), ula_global_id="0123456789",
                       taken6=["fd01:2345:6789::/64"])
    assert ula.subnet6 == "fd01:2345:6789:1::/64"
    with pytest.raises(InvalidInput, match="no unique-local prefix"):
        plan_network(NetworkSpec("d", "10.4.0.0/24", ipv6=True))


# ------------------------------------------------------------------ connect
# plan_connect: every decision of a connect from (network, names, options,
# facts observed once), with ids and MACs from counters, not randomness.
def _counter(fmt):
    it = iter(range(1, 1 << 20))
    return lambda: fmt.format(next(it))


def _plan(net, names, opts=ConnectOptions(), facts=ConnectFacts(), macs=None):
    return plan_connect(net, list(names), opts, facts, now=7.0,
                        new_id=_counter("{:07x}" + "f" * 25),
                        new_mac=macs or _counter("02:00:00:00:00:{:02x}"))


def _dual(**kw) -> Network:
    return _net(subnet6="fd00:1::/64", gateway6="fd00:1::1", ip_range6="fd00:1::/64", **kw)


def _v6only() -> Network:
    return Network("id-six", "six", "br-six", "", "", "", 1500, 0.0, subnet6="fd00:6::/64",
                   gateway6="fd00:6::1", ip_range6="fd00:6::/64")


def _inside(*links, routes=(), addresses=()) -> Snapshot:
    return Snapshot(list(links), list(addresses), list(routes))


def _default_route(oif=2) -> Route:
    return Route("default", "10.9.0.1", oif, 4, 0, None)


def _other(netns, ifname="eth0", default_route=True) -> Endpoint:  # on another network
    return Endpoint("o-" + netns + ifname, "back", netns, ifname, "vethother", "10.9.0.2/24",
                    "02:00:00:00:01:01", "10.9.0.1", default_route, 0.0)


def _exists(*names) -> dict:
    """Facts of existing, recorded namespaces holding only lo (up)."""
    return {"exists": frozenset(names), "recorded": frozenset(names),
            "inside": {n: _inside(_link(1, "lo")) for n in names}}


@pytest.mark.parametrize("net, opts, used, want", [
    (_net(), ConnectOptions(create=True), (), [("10.1.0.2/24", "")]),
    (_net(), ConnectOptions(create=True), ("10.1.0.2", "10.1.0.3"), [("10.1.0.4/24", "")]),
    (_net(aux_addresses=(("router", "10.1.0.2"),)), ConnectOptions(create=True), (),
     [("10.1.0.3/24", "")]),
    (_net(), ConnectOptions(create=True, ip="10.1.0.77"), ("10.1.0.2",),
     [("10.1.0.77/24", "")]),
    (_dual(), ConnectOptions(create=True), ("10.1.0.2", "fd00:1::2"),
     [("10.1.0.3/24", "fd00:1::3/64")]),
    (_dual(), ConnectOptions(create=True, ip6="fd00:1::99"), (),
     [("10.1.0.2/24", "fd00:1::99/64")]),
    (_v6only(), ConnectOptions(create=True), (), [("", "fd00:6::2/64")]),
])
def test_connect_address_choice(net, opts, used, want):
    plan = _plan(net, ["a"], opts, ConnectFacts(used=frozenset(used)))
    ep = plan.endpoints[0]
    assert [(ep.address, ep.address6)] == want
    assert (ep.gateway, ep.gateway6) == (net.gateway if ep.address else "",
                                         net.gateway6 if ep.address6 else "")


def test_connect_addresses_of_a_batch_are_distinct_and_in_order():
    plan = _plan(_dual(), ["a", "b", "c"], ConnectOptions(create=True),
                 ConnectFacts(used=frozenset({"10.1.0.3", "fd00:1::2"})))
    assert [(e.netns, e.address, e.address6) for e in plan.endpoints] == [
        ("a", "10.1.0.2/24", "fd00:1::3/64"), ("b", "10.1.0.4/24", "fd00:1::4/64"),
        ("c", "10.1.0.5/24", "fd00:1::5/64")]


@pytest.mark.parametrize("net, opts, used, exc, error", [
    (_net(), ConnectOptions(ip="10.1.0.5"), ("10.1.0.5",), Conflict,
     "address 10.1.0.5 is already in use on this network"),
    (_net(aux_addresses=(("r", "10.1.0.5"),)), ConnectOptions(ip="10.1.0.5"), (), Conflict,
     "address 10.1.0.5 is already in use on this network"),
    (_net(), ConnectOptions(ip="10.1.0.1"), (), Conflict, "is the gateway of subnet"),
    (_net(), ConnectOptions(ip="10.2.0.5"), (), InvalidInput, "outside subnet 10.1.0.0/24"),
    (_dual(), ConnectOptions(ip6="fd00:1::5"), ("fd00:1::5",), Conflict,
     "address fd00:1::5 is already in use on this network"),
    (_net(), ConnectOptions(ip6="fd00:1::5"), (), InvalidInput,
     "--ip6 fd00:1::5: network 'front' has no IPv6 subnet"),
    (_v6only(), ConnectOptions(ip="10.1.0.5"), (), InvalidInput,
     "--ip 10.1.0.5: network 'six' has no IPv4 subnet"),
])
def test_connect_static_address_refusals(net, opts, used, exc, error):
    facts = ConnectFacts(used=frozenset(used), **_exists("a"))
    with pytest.raises(exc, match=error):
        _plan(net, ["a"], opts, facts)


def test_connect_pool_exhausted():
    net = _net(subnet="10.1.0.0/30")
    with pytest.raises(PoolExhausted, match="is exhausted"):
        _plan(net, ["a", "b"], ConnectOptions(create=True))


@pytest.mark.parametrize("case, opts, mine, inside, want", [
    ("created namespace", ConnectOptions(create=True), (), None, ("eth0", True)),
    ("empty existing namespace", ConnectOptions(), (), _inside(_link(1, "lo")), ("eth0", True)),
    ("on another network, recorded with the default route", ConnectOptions(),
     (_other("a"),), _inside(_link(1, "lo"), _link(2, "eth0")), ("eth1", False)),
    ("on another network without the default route", ConnectOptions(),
     (_other("a", default_route=False),), _inside(_link(1, "lo"), _link(2, "eth0")),
     ("eth1", True)),
    ("a recorded endpoint not (yet) in the kernel still takes its name", ConnectOptions(),
     (_other("a", "eth0", default_route=False),), _inside(_link(1, "lo")), ("eth1", True)),
    ("someone else's interface and default route", ConnectOptions(), (),
     _inside(_link(1, "lo"), _link(2, "eth0"), _link(3, "eth1"), routes=[_default_route()]),
     ("eth2", False)),
    ("a gap is reused", ConnectOptions(), (),
     _inside(_link(1, "lo"), _link(2, "eth1")), ("eth0", True)),
    ("--ifname", ConnectOptions(ifname="net1"), (_other("a"),),
     _inside(_link(1, "lo"), _link(2, "eth0")), ("net1", False)),
])
def test_connect_inside_name_and_default_route(case, opts, mine, inside, want):
    facts = ConnectFacts(exists=frozenset() if inside is None else frozenset({"a"}),
                         endpoints={"a": mine} if mine else {},
                         inside={"a": inside} if inside else {}, recorded=frozenset({"a"}))
    ep = _plan(_net(), ["a"], opts, facts).endpoints[0]
    assert (ep.ifname, ep.default_route) == want, case


@pytest.mark.parametrize("mine, inside", [
    ((_other("a", "net1"),), _inside(_link(1, "lo"))),  # recorded
    ((), _inside(_link(1, "lo"), _link(2, "net1"))),  # in the kernel only
])
def test_connect_inside_name_taken_is_refused(mine, inside):
    facts = ConnectFacts(exists=frozenset({"a"}), endpoints={"a": mine}, inside={"a": inside})
    with pytest.raises(AlreadyExists, match="namespace 'a' already has an interface 'net1'"):
        _plan(_net(), ["a"], ConnectOptions(ifname="net1"), facts)


@pytest.mark.parametrize("lo, addresses, want", [
    (_link(1, "lo", up=False), [], {"a"}),
    (_link(1, "lo", up=True), [], set()),
    (_link(1, "lo", up=False), [Address(1, "127.0.0.1", 8)], set()),
    (_link(1, "lo", up=False), [Address(2, "10.9.0.2", 24)], {"a"}),  # not lo's address
])
def test_connect_pristine_lo(lo, addresses, want):
    facts = ConnectFacts(exists=frozenset({"a"}), inside={"a": _inside(lo, addresses=addresses)})
    assert _plan(_net(), ["a"], ConnectOptions(), facts).pristine_lo == want


def test_connect_created_namespaces_have_no_pristine_lo_and_are_not_foreign():
    facts = ConnectFacts(exists=frozenset({"old", "mine"}), recorded=frozenset({"mine"}),
                         inside={"old": _inside(_link(1, "lo", up=False)),
                                 "mine": _inside(_link(1, "lo"))})
    plan = _plan(_net(), ["new", "old", "mine"], ConnectOptions(create=True), facts)
    assert (plan.create_ns, plan.foreign_ns, plan.pristine_lo) == ({"new"}, {"old"}, {"old"})


@pytest.mark.parametrize("names, connected, facts, opts, exc, error", [
    (["a"], ["a"], ConnectFacts(), ConnectOptions(), AlreadyExists,
     "^namespace 'a' is already connected to network 'front'$"),
    (["a", "b", "c"], ["a", "c"], ConnectFacts(), ConnectOptions(create=True), AlreadyExists,
     "^namespaces 'a', 'c' are already connected to network 'front'; nothing was connected "
     r"\('b' left as they were: all or nothing\)$"),
    (["a"], [], ConnectFacts(), ConnectOptions(), NotFound,
     r"^namespace 'a' does not exist \(create it with 'nsnet ns add a' or pass --create\)$"),
    (["x", "b", "a"], [], ConnectFacts(exists=frozenset({"x"})), ConnectOptions(), NotFound,
     "^namespaces 'a', 'b' do not exist; nothing was connected \\('x' left as they were: "
     r"all or nothing\) \(create it with 'nsnet ns add a' or pass --create\)$"),
    (["a"], [], ConnectFacts(not_namespace={"a": "/run/netns/a"}),
     ConnectOptions(create=True), AlreadyExists, "^/run/netns/a exists and is not a namespace$"),
])
def test_connect_refusals(names, connected, facts, opts, exc, error):
    net = _front(*(_ep(n, "e" + n, "veth" + n) for n in connected))
    with pytest.raises(exc, match=error):
        _plan(net, names, opts, facts)


def test_connect_refusals_come_before_what_they_make_moot():
    """Already connected is said even where the others are missing."""
    net = _front(_ep("a", "ea", "vetha"))
    with pytest.raises(AlreadyExists, match="already connected"):
        _plan(net, ["a", "b"], ConnectOptions(), ConnectFacts())


@pytest.mark.parametrize("present, adding, ok", [(1000, 23, True), (1000, 24, False),
                                                 (0, 1024, False)])
def test_connect_bridge_port_limit(present, adding, ok):
    net = _front(*(_ep(f"p{i}", f"e{i}", f"v{i}") for i in range(present)),
                 subnet="10.0.0.0/16")
    names = [f"n{i}" for i in range(adding)]
    if ok:
        assert len(_plan(net, names, ConnectOptions(create=True)).endpoints) == adding
    else:
        with pytest.raises(PoolExhausted, match=f"would need {present + adding} bridge ports; "
                           "a Linux bridge holds at most 1023"):
            _plan(net, names, ConnectOptions(create=True))


@pytest.mark.parametrize("opts, user, macs, exc, want", [
    (ConnectOptions(create=True, mac="02:AA:00:00:00:01"), None, (), None, "02:aa:00:00:00:01"),
    (ConnectOptions(create=True, mac="02:AA:00:00:00:01"), "web", ("02:aa:00:00:00:01",),
     Conflict, "MAC address 02:aa:00:00:00:01 is already used by 'web' on network 'front'"),
    (ConnectOptions(create=True, mac="02:aa:00:00:00:01"), None, ("02:aa:00:00:00:01",),
     Conflict, "is already used by 'another endpoint' on network 'front'"),
    (ConnectOptions(create=True), None, ("02:00:00:00:00:01", "02:00:00:00:00:02"), None,
     "02:00:00:00:00:03"),  # random MACs already on the bridge are drawn again
])
def test_connect_mac_choice_and_clashes(opts, user, macs, exc, want):
    facts = ConnectFacts(mac_user=user, macs=frozenset(macs))
    if exc:
        with pytest.raises(exc, match=want):
            _plan(_net(), ["a"], opts, facts)
    else:
        assert _plan(_net(), ["a"], opts, facts).endpoints[0].mac == want


def test_connect_random_macs_of_one_batch_never_repeat():
    draws = iter(["02:00:00:00:00:01"] * 3 + ["02:00:00:00:00:02"])
    plan = _plan(_net(), ["a", "b"], ConnectOptions(create=True), macs=lambda: next(draws))
    assert [e.mac for e in plan.endpoints] == ["02:00:00:00:00:01", "02:00:00:00:00:02"]


@pytest.mark.parametrize("alias, owner", [("nsnet:ep:x", "nsnet"), ("", "someone else"),
                                          ("docker", "someone else")])
def test_connect_host_ifname_taken(alias, owner):
    facts = ConnectFacts(host_link_alias=alias)
    with pytest.raises(AlreadyExists, match=f"a link named 'vx' already exists in the host "
                       rf"namespace \(created by {owner}\)"):
        _plan(_net(), ["a"], ConnectOptions(create=True, host_ifname="vx"), facts)


def test_connect_host_ifname_recorded_for_another_endpoint():
    """A --host-ifname that a recorded endpoint has, its link gone (reconcile
    would make it again by that name), is refused before any kernel work,
    not at the commit by the state's unique name."""
    with pytest.raises(AlreadyExists, match="host interface name 'vx' is already recorded "
                       "for another endpoint"):
        _plan(_net(), ["a"], ConnectOptions(create=True, host_ifname="vx"),
              ConnectFacts(host_name_recorded=True))


def test_connect_plan_contents():
    """Names, ids, options and published ports as the plan records them."""
    opts = ConnectOptions(create=True, host_ifname="vx", aliases=("web",),
                          labels=(("k", "1"), ("k", "2")), ports=(_pm(host_port=8080),))
    plan = _plan(_dual(), ["a"], opts)
    (ep,) = plan.endpoints
    assert (ep.id, ep.network, ep.host_ifname, ep.created, ep.aliases, ep.labels) == (
        "0000001" + "f" * 25, "front", "vx", 7.0, ("web",), (("k", "2"),))
    assert [(p.endpoint, p.ip, p.ip6, p.port.host_port) for p in plan.ports] == [
        (ep.id, "10.1.0.2", "fd00:1::2", 8080)]
    plain = _plan(_net(), ["a", "b"], ConnectOptions(create=True))
    assert [e.host_ifname for e in plain.endpoints] == ["veth0000001", "veth0000002"]


def _ids(*prefixes):
    """new_id handing out ids whose first 7 hex digits are these, in turn."""
    it = iter(prefixes)
    return lambda: next(it) + "f" * 25


def test_connect_generated_host_names_never_clash():
    """A generated host end name is "veth" + 7 hex digits of a random id (28
    bits: at 5000 endpoints two meet about once in 20 worlds, which a
    benchmark hit as "File exists"): a name repeated in the batch, or one a
    host link or a recorded endpoint has, gets a fresh id.  The lookups are
    the whole batch once, then only the redrawn names."""
    asked = []

    def taken(names):
        asked.append(list(names))
        return {"veth000000b", "veth000000e"}

    plan = plan_connect(_net(), ["a", "b", "c", "d"], ConnectOptions(create=True),
                        ConnectFacts(), now=7.0, new_id=_ids("000000a", "000000b", "000000a",
                                                             "000000c", "000000d", "000000e",
                                                             "000000f"),
                        new_mac=_counter("02:00:00:00:00:{:02x}"), names_taken=taken)
    names = [e.host_ifname for e in plan.endpoints]
    assert names == ["veth000000a", "veth000000d", "veth000000f", "veth000000c"]
    assert [e.id[:7] for e in plan.endpoints] == [n[4:] for n in names]
    assert asked == [["veth000000a", "veth000000b", "veth000000a", "veth000000c"],
                     ["veth000000d", "veth000000e"], ["veth000000f"]]


def test_connect_host_name_asked_for_is_not_redrawn():
    """A --host-ifname is the user's: its own refusal applies (above), and
    names_taken is never asked about it."""
    plan = plan_connect(_net(), ["a"], ConnectOptions(create=True, host_ifname="vx"),
                        ConnectFacts(), now=7.0, new_id=_ids("000000a"),
                        names_taken=lambda names: pytest.fail(f"asked about {names}"))
    assert plan.endpoints[0].host_ifname == "vx"


def test_connect_gives_up_when_every_generated_name_is_taken():
    with pytest.raises(Conflict, match="no free host interface name found in 8 tries"):
        plan_connect(_net(), ["a"], ConnectOptions(create=True), ConnectFacts(), now=7.0,
                     new_id=_counter("{:07x}" + "f" * 25), names_taken=set)


def test_connect_host_name_found_at_the_last_try_is_kept():
    """Seven lookups find the generated name taken, the eighth finds it free."""
    calls = []

    def taken(names):
        calls.append(names)
        return set(names) if len(calls) < 8 else set()

    plan = plan_connect(_net(), ["a"], ConnectOptions(create=True), ConnectFacts(), now=7.0,
                        new_id=_counter("{:07x}" + "f" * 25), names_taken=taken)
    assert len(calls) == 8 and plan.endpoints[0].host_ifname == "veth0000008"


def test_reconcile_blocks_on_a_foreign_link_in_a_networks_link_group():
    """`network rm` deletes a network's link group in one request (#15): a
    link someone moved into it would go too, so reconcile names it (and
    leaves alone the network's own ends, links in no group and nsnet's
    unclaimed links, which are orphans)."""
    import dataclasses

    group = 600_000_000
    ep = _ep("ns1", "e1", "veth1")
    net = dataclasses.replace(_front(ep), link_group=group)
    links = [_link(5, "br-front", "bridge", alias="nsnet:net:id-front"),
             dataclasses.replace(_link(6, "veth1", master=5, alias="nsnet:ep:e1"), group=group),
             dataclasses.replace(_link(7, "eth9"), group=group),
             dataclasses.replace(_link(8, "vethgone", alias="nsnet:ep:gone"), group=group),
             _link(9, "eth8")]
    svc = FakeServices(nets=[net], mounted={"ns1"}, owned={"ns1"}, links=links,
                       inside={"ns1": _healthy_inside()})
    plan = rc.plan_reconcile(svc)
    assert [(a.kind, a.target) for a in plan] == [("orphan", "vethgone"), ("blocked", "eth9")]
    assert "network rm front" in plan[1].detail and "group default" in plan[1].detail
