"""Endpoints: a veth pair per (network, namespace), host end on the
network's attachment point, inside end configured in the namespace.

Work is done in bulk: one netlink batch creates every veth of a chunk (peer
created directly inside its namespace, host end already enslaved), one
batch brings them up, one batch per namespace configures the inside, and
teardown deletes all host ends of an operation with a single RTM_DELLINK
by (transient) link group.

Planning a connect is two steps.  :meth:`Endpoints.observe` reads, once,
everything the decisions depend on -- the records of the named namespaces
and of this network, whether each name is a namespace, and each existing
namespace's links, addresses and routes -- into one :class:`ConnectFacts`
(O(the names connected + this network), never the whole state).
:func:`plan_connect` then decides every name, address, MAC, default route
and refusal from (network, names, options, facts) alone, before the kernel
is touched: a pure function, table-tested in tests/unit without root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from .. import kernel as k
from ..crash import crashpoint
from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, PoolExhausted
from ..ipam import Pool
from ..model import (
    ALIAS_PREFIX,
    ConnectOptions,
    Endpoint,
    Network,
    PortMap,
    Published,
    parse_ip,
    validate_dns_name,
    validate_ifname,
    validate_mac,
    veth_alias,
)
from .context import (
    CHUNK,
    IPV6_DEFAULT_OFF,
    MAX_BRIDGE_PORTS,
    Context,
    Steps,
    kernel_errors,
    labels,
    new_id,
    no_ipv6,
    random_mac,
    refusal,
)
from .intents import EndpointRef

__all__ = ["ConnectFacts", "ConnectPlan", "Endpoints", "allocate", "born_with",
           "check_connect_options",
           "choose_mac", "default_routes", "host_ifnames", "inside_name", "inside_plan",
           "plan_connect", "published", "reborn_with"]


@dataclass
class ConnectPlan:
    """Everything a connect needs, decided before the kernel is touched."""

    network: Network
    endpoints: list[Endpoint]
    create_ns: set[str]
    foreign_ns: set[str]
    ports: list[Published] = field(default_factory=list)
    pristine_lo: set[str] = field(default_factory=set)  # existing, lo down, no address


@dataclass(frozen=True)
class ConnectFacts:
    """What a connect's decisions depend on, observed once before planning
    (:meth:`Endpoints.observe`): the store's records of the named namespaces
    and of this network, and the kernel's view of the named namespaces.
    Names already on the network are not observed (planning refuses them)."""

    exists: AbstractSet[str] = frozenset()  # names that are mounted namespaces
    # missing names whose path is taken by something else: name -> that path
    not_namespace: Mapping[str, str] = field(default_factory=dict)
    recorded: AbstractSet[str] = frozenset()  # names nsnet has a namespace record of
    # recorded endpoints of the named namespaces (on other networks)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    inside: Mapping[str, k.Snapshot] = field(default_factory=dict)  # each existing one's
    used: AbstractSet[str] = frozenset()  # addresses recorded on this network (both families)
    macs: AbstractSet[str] = frozenset()  # MACs recorded on this network's bridge
    mac_user: str | None = None  # the namespace holding --mac on this network
    host_link_alias: str | None = None  # alias of the host link named --host-ifname; None: none
    # --host-ifname is a recorded endpoint's host end name (its link may be
    # gone: reconcile would make it again by that name)
    host_name_recorded: bool = False


def check_connect_options(opts: ConnectOptions, count: int) -> ConnectOptions:
    """The options, checked for ``count`` namespaces (pure).  Aliases are
    validated and normalised here, once; planning uses them as they are."""
    static = [flag for flag, v in (("--ip", opts.ip), ("--ip6", opts.ip6), ("--mac", opts.mac),
                                   ("--host-ifname", opts.host_ifname),
                                   ("--publish", opts.ports)) if v]
    if static and count > 1:
        raise InvalidInput(f"{static[0]} applies to one namespace; {count} were given")
    if opts.mac:
        validate_mac(opts.mac)
    if opts.ifname:
        validate_ifname(opts.ifname)
    if opts.host_ifname:
        validate_ifname(opts.host_ifname, "host interface name")
    if opts.ip and parse_ip(opts.ip, "--ip").version != 4:
        raise InvalidInput(f"--ip {opts.ip} is not an IPv4 address (--ip6 gives the IPv6 one)")
    if opts.ip6 and parse_ip(opts.ip6, "--ip6").version != 6:
        raise InvalidInput(f"--ip6 {opts.ip6} is not an IPv6 address")
    return dataclasses.replace(opts, aliases=tuple(validate_dns_name(a) for a in opts.aliases))


def inside_name(netns: str, wanted: str | None, present: set[str],
                has_default: bool) -> tuple[str, bool]:
    """Interface name inside the namespace (``wanted``, or the first free
    ethN), and whether it gets the default route (pure)."""
    if wanted:
        if wanted in present:
            raise AlreadyExists(f"namespace {netns!r} already has an interface {wanted!r}")
        return wanted, not has_default
    n = 0
    while f"eth{n}" in present:
        n += 1
    return f"eth{n}", not has_default


def inside_plan(netns: str, wanted: str | None, mine: Iterable[Endpoint],
                snap: k.Snapshot | None) -> tuple[str, bool, bool]:
    """Interface name inside the namespace, whether it gets the default
    route, and whether an existing namespace's lo is pristine (down, no
    address: configuring the inside brings it up), from its recorded
    endpoints on other networks (``mine``) and, for an existing namespace,
    its links, addresses and routes (``snap``; None: created by this
    connect) (pure)."""
    mine = list(mine)
    present: set[str] = {e.ifname for e in mine}
    has_default = any(e.default_route for e in mine)
    pristine = False
    if snap is not None:
        present |= {lk.name for lk in snap.links}
        has_default = has_default or any(r.is_default for r in snap.routes)
        lo = snap.link("lo")
        pristine = bool(lo and not lo.up and not any(a.index == lo.index
                                                     for a in snap.addresses))
    return (*inside_name(netns, wanted, present, has_default), pristine)


def host_ifnames(count: int, wanted: str | None, alias: str | None,
                 recorded: bool = False) -> list[str | None]:
    """The host end names asked for (None: nsnet names it), refusing a name
    a host link already has (``alias``: that link's; None: no such link) or
    a recorded endpoint has (``recorded``) (pure)."""
    if not wanted:
        return [None] * count
    if recorded:
        raise AlreadyExists(f"host interface name {wanted!r} is already recorded for another "
                            "endpoint")
    if alias is not None:
        owner = "nsnet" if alias.startswith(ALIAS_PREFIX) else "someone else"
        raise AlreadyExists(f"a link named {wanted!r} already exists in the host "
                            f"namespace (created by {owner})")
    return [wanted]


NAME_TRIES = 8  # rounds of fresh ids for generated host end names that clash


def host_end_ids(wanted: list[str | None], new_id: Callable[[], str],
                 names_taken: Callable[[list[str]], AbstractSet[str]]) -> list[tuple[str, str]]:
    """(endpoint id, host end name) for each endpoint: the name asked for,
    or "veth" + the id's first 7 hex digits, as Docker names its ends.  That
    is 28 random bits: among 5000 endpoints two meet about once in 20
    worlds, and a foreign link (Docker's ends look alike) may hold one, so a
    generated name that the batch repeats or that ``names_taken`` reports
    (a host link or a recorded endpoint has it) gets a fresh id and is
    checked again -- as libnetwork's GenerateIfaceName retries.  One lookup
    of the whole batch, then of the few redrawn names only (pure but for
    ``new_id`` and ``names_taken``)."""
    out = []
    for name in wanted:
        ep_id = new_id()
        out.append((ep_id, name or f"veth{ep_id[:7]}"))
    redraw = [i for i, name in enumerate(wanted) if not name]
    for _ in range(NAME_TRIES):
        if not redraw:
            break
        taken = set(names_taken([out[i][1] for i in redraw]))
        seen: set[str] = {name for name in wanted if name}
        clashes = []
        for i, (_, name) in enumerate(out):
            if not wanted[i] and (name in seen or name in taken):
                clashes.append(i)
            seen.add(name)
        for i in clashes:
            ep_id = new_id()
            out[i] = (ep_id, f"veth{ep_id[:7]}")
        redraw = clashes
    if not redraw:
        return out
    raise Conflict(f"no free host interface name found in {NAME_TRIES} tries "
                   "(every generated name was taken)")


def choose_mac(net: Network, wanted: str | None, user: str | None, used: set[str],
               new_mac: Callable[[], str] = random_mac) -> str:
    """``wanted``, or a random one, not used on this bridge yet: two ports with
    one MAC make the bridge flap its forwarding entry.  ``user``: the
    namespace recorded with ``wanted`` on this network; ``used``: the
    bridge's MACs, which the chosen one joins (so a batch never repeats one)
    (pure but for ``new_mac``)."""
    if wanted:
        mac = wanted.lower()
        if user or mac in used:
            raise Conflict(f"MAC address {mac} is already used by "
                           f"{user or 'another endpoint'!r} on network {net.name!r}")
    else:
        mac = new_mac()
        while mac in used:
            mac = new_mac()
    used.add(mac)
    return mac




def _none_taken(_names: list[str]) -> set[str]:
    return set()


def plan_connect(net: Network, names: list[str], opts: ConnectOptions, facts: ConnectFacts,
                 *, now: float, new_id: Callable[[], str] = new_id,
                 new_mac: Callable[[], str] = random_mac,
                 names_taken: Callable[[list[str]], AbstractSet[str]] = _none_taken
                 ) -> ConnectPlan:
    """Every decision of a connect of ``names`` to ``net``, from what was
    observed (pure: the only inputs besides the arguments are ``new_id`` and
    ``new_mac``, fresh random ids and MACs, and ``names_taken``, which of
    the generated host end names a host link or a recorded endpoint has).
    Refusals come in this order: already connected, bridge port limit,
    missing namespaces, a path that is not a namespace, addresses, host
    interface name, inside interface name, MAC."""
    taken = {e.netns for e in net.endpoints}
    already = [n for n in names if n in taken]
    if already:
        raise AlreadyExists(refusal(already, f"is already connected to network "
                                    f"{net.name!r}", f"are already connected to network "
                                    f"{net.name!r}", names, "connected"))
    if len(net.endpoints) + len(names) > MAX_BRIDGE_PORTS:
        raise PoolExhausted(f"network {net.name!r} would need {len(net.endpoints) + len(names)}"
                            f" bridge ports; a Linux bridge holds at most {MAX_BRIDGE_PORTS}")
    missing = {n for n in names if n not in facts.exists}
    if missing and not opts.create:
        first = sorted(missing)[0]
        raise NotFound(refusal(sorted(missing), "does not exist", "do not exist", names,
                               "connected") + f" (create it with 'nsnet ns add {first}' "
                       "or pass --create)")
    for name in sorted(missing):
        if name in facts.not_namespace:
            raise AlreadyExists(f"{facts.not_namespace[name]} exists and is not a namespace")
    used = set(facts.used) | {ip for _, ip in net.aux_addresses}
    ips = allocate(net, used, len(names), opts.ip, opts.ip6)
    host_names = host_ifnames(len(names), opts.host_ifname, facts.host_link_alias,
                              facts.host_name_recorded)
    foreign = {n for n in names if n not in missing and n not in facts.recorded}
    macs = set(facts.macs)
    endpoints = []
    pristine_lo: set[str] = set()
    ids = host_end_ids(host_names[:len(names)], new_id, names_taken)
    for name, (ip, ip6), (ep_id, host_if) in zip(names, ips, ids, strict=False):
        ifname, default_route, pristine = inside_plan(
            name, opts.ifname, facts.endpoints.get(name, ()),
            None if name in missing else facts.inside[name])
        if pristine:
            pristine_lo.add(name)
        endpoints.append(Endpoint(
            ep_id, net.name, name, ifname, host_if,
            ip, choose_mac(net, opts.mac, facts.mac_user, macs, new_mac),
            net.gateway if ip else "", default_route, now, opts.aliases, labels(opts.labels),
            ip6, net.gateway6 if ip6 else ""))
    ports = [p for e in endpoints for p in published(e, net, opts.ports)]
    return ConnectPlan(net, endpoints, missing, foreign, ports, pristine_lo)


def host_ends_without_ipv6(ctx: Context, names: list[str]) -> None:
    """IPv6 off on host veth ends, before they have a carrier -- before they
    go up, or (connect: born up) before their peers do: without a carrier
    the kernel configures no IPv6 on a link that is up (one namespace
    switch for all).

    A bridge port needs no IPv6 of its own (IPv6 networks too: the gateway
    is the bridge, the addresses are inside).  With it on, each host end
    whose peer is up gets a link-local address and routes in the host's
    IPv6 FIB, and the kernel walks that whole FIB whenever any link goes
    up or away (rt6_sync_up, rt6_disable_ip/fib6_ifdown: a third of all
    perf samples of a network rm at 3 x 1000 endpoints, most of the rest
    idle): connecting or removing the 5th network's 1000 endpoints cost
    3-5x the 1st's; with it off, 0.9-1.3x (bench/results/scale.md)."""
    if names:
        with kernel_errors("turning IPv6 off on host veth ends"):
            k.write_sysctls(ctx.host, {no_ipv6(name): "1" for name in names})


def born_with(net: Network) -> dict[str, str]:
    """The IPv6 defaults of a namespace created for an endpoint on ``net``,
    written before the endpoint's interface is made in it, so that the
    interface is born as ``net`` wants it and needs no write of its own:
    IPv6 off (IPv4-only networks), or on and quiet (kernel/ipv6.py: no RA,
    SLAAC, DAD or link-local address)."""
    return k.ipv6_quiet_default_sysctls() if net.has_ipv6 else {IPV6_DEFAULT_OFF: "1"}


def reborn_with(nets: Iterable[Network]) -> dict[str, str]:
    """The birth values of a namespace made again for endpoints on ``nets``
    (reconcile, after it vanished): :func:`born_with` the first of them that
    has IPv6 -- so its interfaces are born quiet, as ``connect --create``
    births them -- else IPv6 off.  (Interfaces of an IPv4-only network in a
    namespace born quiet get IPv6 off written per interface, as in any
    namespace that existed before a connect.)  No network: IPv6 off."""
    nets = list(nets)
    six = [n for n in nets if n.has_ipv6]
    return born_with(six[0]) if six else {IPV6_DEFAULT_OFF: "1"}


def configure_inside(ns: k.Netns, ep: Endpoint, born_ready: bool) -> None:
    """Inside one namespace: unless the interface was born so (``born_ready``:
    its namespace was created by this connect, with :func:`born_with` its
    network), IPv6 off on it -- or, on an IPv6 network, quiet IPv6 on -- then
    one batch: lo up, interface up, addresses (IPv6 without DAD), default
    routes."""
    with k.entered(ns.fd):
        if born_ready:
            pass  # IPv4-only: born without IPv6; IPv6: born quiet
        elif ep.address6:
            k.write_sysctls_here(k.ipv6_interface_sysctls(ep.ifname))
        else:
            k.write_sysctls_here({no_ipv6(ep.ifname): "1"})
        rtnl = k.Rtnl()  # a socket of this namespace
    with rtnl as rt:
        index = rt.link(ep.ifname).index
        reqs = [k.req_set_link("lo", up=True), k.req_set_link(index=index, up=True)]
        reqs += [k.req_add_addr(index, a, nodad=":" in a) for a in (ep.address, ep.address6) if a]
        if ep.default_route:
            reqs += default_routes(ep, index)
        rt.run(reqs)


def default_routes(ep: Endpoint, oif: int = 0) -> list[k.Request]:
    """The default route of each family the endpoint has, via its gateways."""
    reqs = [k.req_add_route("default", ep.gateway, oif=oif)] if ep.address else []
    if ep.address6:
        reqs.append(k.req_add_route6("default", ep.gateway6, oif=oif))
    return reqs


def allocate(net: Network, used: set[str], count: int, ip: str | None,
             ip6: str | None) -> list[tuple[str, str]]:
    """(IPv4 CIDR, IPv6 CIDR) for ``count`` endpoints, "" for a family the
    network lacks; a static address only for the family it belongs to."""
    if ip and not net.has_ipv4:
        raise InvalidInput(f"--ip {ip}: network {net.name!r} has no IPv4 subnet")
    if ip6 and not net.has_ipv6:
        raise InvalidInput(f"--ip6 {ip6}: network {net.name!r} has no IPv6 subnet")
    v4 = [""] * count
    v6 = [""] * count
    if net.has_ipv4:
        pool = Pool.parse(net.subnet, net.gateway, net.ip_range)
        v4 = [f"{a}/{net.prefixlen}" for a in ([pool.check_static(ip, used)] if ip
                                               else pool.allocate(used, count))]
    if net.has_ipv6:
        pool6 = Pool.parse(net.subnet6, net.gateway6, net.ip_range6)
        v6 = [f"{a}/{net.prefixlen6}" for a in ([pool6.check_static(ip6, used)] if ip6
                                                else pool6.allocate(used, count))]
    return list(zip(v4, v6, strict=True))


def published(ep: Endpoint, net: Network, ports: Iterable[PortMap]) -> list[Published]:
    """The endpoint's mappings, with both of its addresses (the firewall
    publishes each mapping in the families it serves and the endpoint has)."""
    return [Published(ep.id, net.name, ep.netns, ep.ip, m, ep.ip6, net.ipv6_mode == "routed")
            for m in ports]


class Endpoints:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -------------------------------------------------------------- plan
    def find(self, net: Network, netns: str) -> Endpoint:
        ep = next((e for e in net.endpoints if e.netns == netns), None)
        if ep is None:
            raise NotFound(f"namespace {netns!r} is not connected to network {net.name!r}")
        return ep

    def plan(self, net: Network, names: list[str], opts: ConnectOptions) -> ConnectPlan:
        """Observe, then decide (:func:`plan_connect`)."""
        return plan_connect(net, names, opts, self.observe(net, names, opts), now=time.time(),
                            new_id=new_id, names_taken=self.host_names_taken)

    def host_names_taken(self, names: list[str]) -> set[str]:
        """Which of these host link names a host link or a recorded endpoint
        has: one pipelined lookup by name and one indexed query, O(len(names))."""
        return set(self.ctx.rtnl.links_named(names)) | self.ctx.store.host_ifnames_used(names)

    def observe(self, net: Network, names: list[str], opts: ConnectOptions) -> ConnectFacts:
        """Everything :func:`plan_connect` reads, read once: by index in the
        store (these names' records and endpoints, this network's addresses
        and MACs) and by name in the kernel (is each a namespace; the links,
        addresses and routes inside each existing one; the --host-ifname
        link).  Names already on the network are skipped: they are refused."""
        ctx, store = self.ctx, self.ctx.store
        taken = {e.netns for e in net.endpoints}
        todo = [n for n in names if n not in taken]
        exists = {n for n in todo if ctx.ns_exists(n)}
        not_namespace = {n: ctx.ns_path(n) for n in todo
                         if n not in exists and os.path.lexists(ctx.ns_path(n))}
        used = store.used_addresses(net.id)  # O(this network)
        recorded = set(store.namespaces(todo))  # these names only, by key
        by_ns: dict[str, list[Endpoint]] = {}
        for ep in store.endpoints_of_namespaces(todo):  # by index: these names only
            by_ns.setdefault(ep.netns, []).append(ep)
        macs = store.macs(net.id)  # the bridge's MACs: one query, O(this network)
        mac_user = store.mac_user(net.id, opts.mac) if opts.mac else None
        inside = {n: ctx.snapshot(n) for n in todo if n in exists}
        return ConnectFacts(frozenset(exists), not_namespace, frozenset(recorded),
                            {n: tuple(eps) for n, eps in by_ns.items()}, inside,
                            frozenset(used), frozenset(macs), mac_user,
                            self._host_link_alias(opts.host_ifname),
                            self._host_name_recorded(opts.host_ifname))

    def refuse_taken_links(self, links: Mapping[str, str | None]) -> None:
        """Refuse, before anything is changed, a host link name already in use
        by a link that is not the caller's own: ``links`` maps each name to the
        ownership alias nsnet gave it (None: it must not exist).  One lookup
        per name, not a dump."""
        for name, alias in links.items():
            link = self.ctx.rtnl.find_link(name)
            if link and (alias is None or link.alias != alias):
                raise AlreadyExists(f"a link named {name!r} already exists and was not "
                                    "created by nsnet; nothing was changed")

    def free_mac(self, net: Network, mac: str | None) -> str:
        """``mac``, or a random one, not used on this bridge yet (one index
        lookup per candidate, not the bridge's MACs: a single endpoint)."""
        store = self.ctx.store
        if mac:
            return choose_mac(net, mac, store.mac_user(net.id, mac), set())
        mac = random_mac()
        while store.mac_user(net.id, mac):
            mac = random_mac()
        return mac

    def _host_name_recorded(self, name: str | None) -> bool:
        """Whether a recorded endpoint has host end ``name`` (by the unique index)."""
        return bool(name and self.ctx.store.host_ifnames_used([name]))

    def _host_link_alias(self, name: str | None) -> str | None:
        """The alias of the host link named ``name`` ("" if it has none;
        None: no such link, or no name asked for)."""
        link = self.ctx.rtnl.find_link(name) if name else None
        return link.alias if link else None

    # ------------------------------------------------------------- apply
    def attach(self, plan: ConnectPlan, attach_index: int, steps: Steps | None = None,
               eps: list[Endpoint] | None = None) -> None:
        """Make the planned endpoints (or ``eps`` of them), chunk by chunk."""
        eps = plan.endpoints if eps is None else eps
        for start in range(0, len(eps), CHUNK):
            self._attach_chunk(plan, attach_index, eps[start : start + CHUNK], steps)

    def _attach_chunk(self, plan: ConnectPlan, bridge: int, chunk: list[Endpoint],
                      steps: Steps | None = None) -> None:
        rtnl = self.ctx.rtnl
        handles = [self.ctx.open_ns(e.netns) for e in chunk]
        try:
            self._number_namespaces(handles)
            # host ends born up (VethSpec.up: one link notification fewer each,
            # whose cost grows with the namespaces present) where nsnet made the
            # namespace: no carrier until their peers go up inside, which nsnet
            # does after IPv6 is off on them below.  In a namespace nsnet did
            # not make, a process inside (networkd...) could bring the peer up
            # first: those host ends go up only once IPv6 is off, as before.
            reqs = [k.req_new_veth(k.VethSpec(e.host_ifname, e.ifname, ns.fd, master=bridge,
                                              mtu=plan.network.mtu, peer_mac=k.mac_bytes(e.mac),
                                              group=plan.network.link_group,
                                              up=e.netns in plan.create_ns))
                    for e, ns in zip(chunk, handles, strict=True)]
            result = rtnl.batch(reqs)
            crashpoint("connect:veths")
            with kernel_errors("creating veth pairs"):
                for req, err, detail in result.failures(reqs):
                    raise k.NetlinkError(err, req.what, detail)
            host_ends_without_ipv6(self.ctx, [e.host_ifname for e in chunk])
            with kernel_errors("marking host ends"):
                # hairpin: br_netfilter *bridges* a packet DNATed to an address on
                # the bridge it came from, so an endpoint reaching its own
                # published port goes back out of its own port.  (The kernel
                # takes neither the alias nor a port mode in a creating request.)
                hairpin = None if plan.network.internal else True
                rtnl.run([k.req_set_link(e.host_ifname, alias=veth_alias(e.id), hairpin=hairpin,
                                         up=None if e.netns in plan.create_ns else True)
                          for e in chunk])
            crashpoint("connect:host-up")
            for ep, ns in zip(chunk, handles, strict=True):
                with kernel_errors(f"configuring {ep.ifname} in namespace {ep.netns!r}"):
                    configure_inside(ns, ep, born_ready=ep.netns in plan.create_ns)
                crashpoint("connect:inside")
                if steps:
                    steps.advance()
        finally:
            for ns in handles:
                ns.close()

    def _number_namespaces(self, handles: list[k.Netns]) -> None:
        """Give the host's ids of these namespaces ourselves, each below every
        one given before (k.req_new_nsid says why: the kernel's walk then
        finds the newest first).  Best effort, never a failure: a namespace
        that already has an id (connected before, or someone's) keeps it
        (EEXIST), an id someone else took is skipped, and without ids left
        the kernel numbers them as it always did; a netlink error here only
        costs the speed-up (a state error fails the connect, as any other
        write of the state would).  The counter is the state directory's:
        a second state directory on the same host starts from the same top,
        its ids collide (EEXIST) and its namespaces get the kernel's ids."""
        with self.ctx.store.transaction():
            ids = self.ctx.store.take_nsids(len(handles))
        reqs = [k.req_new_nsid(ns.fd, nsid) for ns, nsid in zip(handles, ids, strict=False)]
        if reqs:
            with contextlib.suppress(OSError):
                self.ctx.rtnl.batch(reqs)  # per-request failures ignored, as said

    # ------------------------------------------------------ handed off
    def plan_handoff(self, net: Network, name: str, opts: ConnectOptions) -> Endpoint:
        used = self.ctx.store.used_addresses(net.id) | {ip for _, ip in net.aux_addresses}
        ((ip, ip6),) = allocate(net, used, 1, opts.ip, opts.ip6)
        ((ep_id, host),) = host_end_ids(
            host_ifnames(1, opts.host_ifname, self._host_link_alias(opts.host_ifname),
                         self._host_name_recorded(opts.host_ifname)),
            new_id, self.host_names_taken)
        peer = opts.ifname or f"nsh{ep_id[:8]}"
        if self.ctx.rtnl.find_link(peer):
            raise AlreadyExists(f"a link named {peer!r} already exists in the host namespace")
        return Endpoint(ep_id, net.name, name, peer, host, ip,
                        self.free_mac(net, opts.mac), net.gateway if ip else "", True,
                        time.time(), opts.aliases, labels(opts.labels), ip6,
                        net.gateway6 if ip6 else "")

    def create_handoff_pair(self, net: Network, ep: Endpoint, attach_index: int) -> None:
        rtnl = self.ctx.rtnl
        spec = k.VethSpec(ep.host_ifname, ep.ifname, self.ctx.host.fd, master=attach_index,
                          mtu=net.mtu, peer_mac=k.mac_bytes(ep.mac), group=net.link_group)
        with kernel_errors(f"creating veth pair {ep.host_ifname} <-> {ep.ifname}"):
            rtnl.run([k.req_new_veth(spec)])
            crashpoint("connect:veths")
            host_ends_without_ipv6(self.ctx, [ep.host_ifname])
            hairpin = None if net.internal else True
            rtnl.run([k.req_set_link(ep.host_ifname, up=True, alias=veth_alias(ep.id),
                                     hairpin=hairpin)])

    def forget_idle_handoffs(self) -> None:
        """Drop handed-off names whose endpoint is gone (inside a transaction)."""
        self.ctx.store.forget_idle_handoffs()  # by index, not every endpoint and namespace

    # ------------------------------------------------------------ remove
    def delete_host_ends(self, eps: list[Endpoint], group: int = 0) -> None:
        """Delete host veth ends nsnet owns (their peers go with them), all in
        one RTM_DELLINK: the kernel pays one RCU grace period, not one per link.

        ``group``: the link group of a network being removed as a whole
        (``eps`` are all of its endpoints).  Its ends were born in it, so one
        RTM_DELLINK by that group deletes them with no lookup or group change
        per end first -- each of which makes the kernel fill a link message,
        and for a veth end that maps the peer's namespace to an id by a
        linear scan of the host's ids (peernet2id): ~0.25 ms per end at 5000
        endpoints.  Then, by name as below, whatever the group left: ends
        made before networks had groups, or moved out of it (a name that is
        gone costs the kernel a hash lookup, no message)."""
        if not eps:
            return
        if group:
            self.ctx.delete_group(group)
            crashpoint("delete:group")
        links = self.ctx.rtnl.links_named([e.host_ifname for e in eps])  # not a dump of all
        ours = [links[e.host_ifname] for e in eps
                if e.host_ifname in links and links[e.host_ifname].alias == veth_alias(e.id)]
        self.ctx.delete_links([lk.name for lk in ours])

    def undo_host_ends(self, refs: Iterable[EndpointRef], group: int = 0) -> None:
        """Rollback: host ends of a connect that did not commit (marked, or not
        yet marked).  An unmarked one is taken only in the network's link
        group ``group``, where nsnet's ends are born: a veth of the same name
        that someone made between the plan's lookup and nsnet's create
        (Docker's are unmarked too) made the create fail, and stays."""
        refs = list(refs)
        links = self.ctx.rtnl.links_named([r.host_ifname for r in refs])

        def ours(ref: EndpointRef) -> bool:
            link = links.get(ref.host_ifname)
            if link is None or link.kind != "veth":
                return False
            if link.alias == veth_alias(ref.id):
                return True
            return link.alias == "" and (not group or link.group == group)

        self.ctx.delete_links([r.host_ifname for r in refs if ours(r)])

    def move_default_routes(self, removed: list[Endpoint]) -> list[Endpoint]:
        """Like Docker: a namespace losing its gateway network gets the default
        route of another network it is still on."""
        gone = {e.id for e in removed}
        # the namespaces' other endpoints in one query per 500 namespaces, not
        # one per namespace (a network rm of 1000 made 1000 queries)
        others: dict[str, list[Endpoint]] = {}
        wanting = {e.netns for e in removed if e.default_route}
        for e in self.ctx.store.endpoints_of_namespaces(wanting):  # in endpoint order
            if e.id not in gone:
                others.setdefault(e.netns, []).append(e)
        moved = []
        for ep in removed:
            if not ep.default_route:
                continue
            rest = others.get(ep.netns, [])
            if not rest or not self.ctx.ns_exists(ep.netns):
                continue
            ns = self.ctx.open_ns(ep.netns)
            try:
                with kernel_errors(f"moving the default route of {ep.netns!r}"), \
                        k.open_rtnl(ns) as rt:
                    rt.batch(default_routes(rest[0]))
            finally:
                ns.close()
            moved.append(rest[0])
        return moved
