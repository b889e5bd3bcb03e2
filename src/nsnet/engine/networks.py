"""Networks, and the network-driver seam.

As netavark's driver trait, a :class:`NetworkDriver` is what differs per
network type: ``validate`` (before anything is changed), ``setup``,
``teardown`` (only what carries this network's mark), the attachment point
endpoints are enslaved to, and the *facts* reconcile compares with the
state.  :class:`BridgeDriver` is the only one today (a Linux bridge in the
host namespace, with its tc loopback guard and sysctls); an overlay driver
would be the second, with no change to the other resources.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import random
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

from .. import kernel as k
from ..crash import crashpoint
from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound
from ..firewall import rules as fw
from ..ipam import Pool, ipv6_pool
from ..model import (
    Network,
    NetworkSpec,
    bridge_alias,
    parse_ip,
    validate_ifname,
    validate_ipv6_mode,
    validate_mtu,
    validate_network_name,
)
from .context import Context, kernel_errors, labels, new_id, no_ipv6, random_mac

__all__ = ["LINK_GROUPS", "BridgeDriver", "DriverFact", "NetworkDriver", "Networks",
           "bridge_sysctls", "pick_link_group"]

DEFAULT_MTU = 1500
DRIVERS = ("bridge", "overlay")  # overlay: engine/overlay.py, registered by the facade
# Networks' link groups (IFLA_GROUP of their host veth ends): random in
# [2^29, 2^30), unique among this host's networks.  Below INT_MAX, so iproute2
# can name one (`ip link show group N`; --explain's commands replay), and
# apart from nsnet's transient groups [2^30, 2^31) (context.transient_group),
# which a disconnect moves links to and deletes.  No tool puts links in such
# a group unasked; one found there is reported by reconcile, and one the
# kernel cannot delete makes rm fall back to deleting by name.
LINK_GROUPS = (1 << 29, 1 << 30)


def pick_link_group(taken: AbstractSet[int],
                    draw: Callable[[int, int], int] = random.randrange) -> int:
    """A link group for a new network: random in :data:`LINK_GROUPS`, none of
    ``taken`` (the other networks' groups) (pure but for ``draw``)."""
    group = draw(*LINK_GROUPS)
    while group in taken:
        group = draw(*LINK_GROUPS)
    return group


def bridge_sysctls(net: Network) -> dict[str, str]:
    # An IPv6 network's bridge is its gateway: quiet IPv6 on, with its
    # link-local address (see kernel/ipv6.py); an IPv4-only one has IPv6 off.
    values = k.ipv6_gateway_sysctls(net.bridge) if net.has_ipv6 else {no_ipv6(net.bridge): "1"}
    if not net.internal and net.has_ipv4:
        # The host's own 127.0.0.1 reaches published ports by DNAT to the
        # bridge: the kernel must route a loopback source out of it (then
        # SNATed).  Chosen over a userland proxy: no process or socket per
        # port, kernel speed; the firewall's guard chain drops 127.0.0.0/8
        # arriving *from* the bridge (CVE-2020-8558), and so does the bridge's
        # tc loopback guard, which survives an `nft flush ruleset`.
        values[f"net/ipv4/conf/{net.bridge}/route_localnet"] = "1"
    return values


def gateway_cidrs(net: Network) -> list[str]:
    """The bridge's gateway address of each family the network has."""
    return ([f"{net.gateway}/{net.prefixlen}"] if net.has_ipv4 else []) + \
        ([f"{net.gateway6}/{net.prefixlen6}"] if net.has_ipv6 else [])


def gateway_addresses(net: Network, index: int) -> list[k.Request]:
    """Requests adding the gateway addresses (IPv6 without DAD: usable at once)."""
    return [k.req_add_addr(index, cidr, nodad=":" in cidr) for cidr in gateway_cidrs(net)]


@dataclass(frozen=True)
class DriverFact:
    """One way a network's kernel objects differ from the state: ``repair``
    means the driver can fix it (reconcile's "bridge" action); otherwise a
    person must (a "blocked" action)."""

    target: str
    detail: str
    repair: bool


class NetworkDriver(Protocol):
    def validate(self, net: Network) -> None:
        """Refuse before anything is changed (a name taken...)."""

    def setup(self, net: Network) -> None:
        """Make the network's kernel objects (the caller's intent undoes them)."""

    def teardown(self, net_id: str, device: str, unmarked_too: bool = False) -> None:
        """Remove what carries this network's mark (idempotent)."""

    def attach_index(self, net: Network) -> int:
        """The link index endpoints of ``net`` are enslaved to."""

    def facts(self, net: Network, links: dict[str, k.Link]) -> list[DriverFact]:
        """How the kernel differs from the state, for reconcile (empty: in step)."""

    def repair(self, net: Network) -> None:
        """Make the kernel match the state again (reconcile)."""


class BridgeDriver:
    """A Linux bridge in the host namespace, marked with the network's id."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def validate(self, net: Network) -> None:
        for other in self.ctx.store.networks(with_endpoints=False):
            if other.bridge == net.bridge:
                raise AlreadyExists(f"bridge {net.bridge!r} is already used by network "
                                    f"{other.name!r}")
        link = self.ctx.rtnl.find_link(net.bridge)
        if link:
            raise AlreadyExists(f"a link named {net.bridge!r} already exists in the host "
                                "namespace and was not created by nsnet; nothing was changed")

    def setup(self, net: Network) -> None:
        with kernel_errors(f"creating bridge {net.bridge}"):
            rt = self.ctx.rtnl
            rt.run([k.req_new_bridge(net.bridge, net.mtu, mac=random_mac(), up=False)])
            crashpoint("bridge:created")
            index = rt.link(net.bridge).index
            self._guard_loopback(index)  # before route_localnet is ever on
            # written while the bridge is down: its link-local address is
            # born under them (no DAD), see kernel/ipv6.py
            k.write_sysctls(self.ctx.host, bridge_sysctls(net))
            rt.run([*gateway_addresses(net, index),
                    k.req_set_link(index=index, up=True, alias=bridge_alias(net.id))])
            crashpoint("bridge:configured")
        if not net.internal:
            if net.has_ipv4:
                self.ctx.ensure_forwarding()
            if net.has_ipv6:
                self.ctx.ensure_forwarding6()

    def _guard_loopback(self, index: int) -> None:
        """The bridge's tc loopback guard (see :mod:`nsnet.kernel.tc`): it lives
        and dies with the bridge, so it needs no record of its own, and no nft
        flush removes it.  Idempotent (reconcile re-adds a removed one)."""
        reqs = [k.req_clsact(index), k.req_loopback_guard(index, fw.LOCALNET_MARK)]
        for err, detail in self.ctx.rtnl.batch(reqs).errors:
            if err and err != errno.EEXIST:
                raise k.NetlinkError(err, "adding the loopback guard", detail)

    def teardown(self, net_id: str, device: str, unmarked_too: bool = False) -> None:
        """Delete the bridge if it carries this network's mark (or, when rolling
        back its own creation, no mark yet)."""
        link = self.ctx.rtnl.find_link(device)
        marks = {bridge_alias(net_id)} | ({""} if unmarked_too else set())
        if link and link.kind == "bridge" and link.alias in marks:
            with kernel_errors(f"deleting bridge {device}"):
                self.ctx.rtnl.run([k.req_del_link(index=link.index)])

    def quiesce(self, net_id: str, device: str) -> None:
        """Before a doomed bridge's ports are deleted: multicast snooping
        off, so each port leaving does not restart every other port's query
        timers (see k.req_bridge_mcast_snooping: ~0.15 s of 1000 ports).
        Only a bridge carrying this network's mark; best effort -- the
        deletion is the same without it, and a crash after it is rolled
        forward to the bridge's deletion anyway."""
        link = self.ctx.rtnl.find_link(device)
        if link and link.kind == "bridge" and link.alias == bridge_alias(net_id):
            self.ctx.rtnl.batch([k.req_bridge_mcast_snooping(link.index, False)])

    def attach_index(self, net: Network) -> int:
        link = self.ctx.rtnl.find_link(net.bridge)
        if link is None or link.alias != bridge_alias(net.id):
            raise NotFound(f"bridge {net.bridge!r} of network {net.name!r} is missing from the "
                           "host namespace")
        return link.index

    def repair(self, net: Network) -> None:
        link = self.ctx.rtnl.find_link(net.bridge)
        if link is None:
            self.setup(net)
            return
        with kernel_errors(f"repairing bridge {net.bridge}"):
            self._guard_loopback(link.index)
            k.write_sysctls(self.ctx.host, bridge_sysctls(net))
            self.ctx.rtnl.batch(gateway_addresses(net, link.index))
            self.ctx.rtnl.run([k.req_set_link(index=link.index, up=True)])

    def facts(self, net: Network, links: dict[str, k.Link]) -> list[DriverFact]:
        link = links.get(net.bridge)
        if link is None:
            return [DriverFact(net.bridge, f"bridge of network {net.name!r} is missing: "
                               "recreate", True)]
        if link.alias != bridge_alias(net.id):
            return [DriverFact(net.bridge, f"a link nsnet did not create holds the name of "
                               f"network {net.name!r}'s bridge: remove or rename it", False)]
        rtnl = self.ctx.rtnl
        addrs = {a.cidr for a in rtnl.addresses() if a.index == link.index} \
            if net.has_ipv4 else set()
        if net.has_ipv6:
            addrs |= {a.cidr for a in rtnl.addresses(k.INET6) if a.index == link.index}
        if not set(gateway_cidrs(net)) <= addrs or not link.up:
            return [DriverFact(net.bridge, "gateway address or up state missing: repair", True)]
        if not k.loopback_guarded(rtnl, link.index, fw.LOCALNET_MARK):
            return [DriverFact(net.bridge, "loopback guard (tc filter dropping 127.0.0.0/8) "
                               "missing: repair", True)]
        wrong = sorted(key for key, value in bridge_sysctls(net).items()
                       if self._sysctl(key) not in (value, None))
        if wrong:  # e.g. route_localnet, which the localhost port path needs
            return [DriverFact(net.bridge, f"sysctl {', '.join(wrong)} not as nsnet set it: "
                               "repair", True)]
        return []

    def _sysctl(self, key: str) -> str | None:
        """None where the kernel has no such key (e.g. built without IPv6)."""
        try:
            return k.read_sysctl(self.ctx.host, key)
        except FileNotFoundError:
            return None


def aux_addresses(pools: list[Pool], aux: Iterable[tuple[str, str]]
                  ) -> tuple[tuple[str, str], ...]:
    """Docker's --aux-address NAME=IP: inside the subnet of its family, not
    the gateway, each name and address once; IPAM never hands them out."""
    out: dict[str, str] = {}
    for name, text in aux:
        if not name:
            raise InvalidInput(f"--aux-address ={text}: the name is empty (NAME=IP)")
        ip = parse_ip(text, f"--aux-address {name}")
        pool = next((p for p in pools if p.subnet.version == ip.version), pools[0])
        pool._check_in_subnet(ip, f"--aux-address {name}")
        if ip == pool.gateway:
            raise InvalidInput(f"--aux-address {name}={ip} is the gateway")
        if name in out or str(ip) in out.values():
            raise InvalidInput(f"--aux-address {name}={ip}: name or address given twice")
        out[name] = str(ip)
    return tuple(out.items())


def wants_ula(spec: NetworkSpec) -> bool:
    """Whether the spec asks for IPv6 without naming a subnet (the ULA pool picks)."""
    return spec.ipv6 and not spec.subnet6


def plan_network(spec: NetworkSpec, net_id: str | None = None,
                 now: float | None = None, *, ula_global_id: str | None = None,
                 taken6: Iterable[str] = ()) -> Network:
    """The network a spec asks for, every field checked (pure: no state, no
    kernel).  IPv6 (Docker's rules, see :func:`nsnet.ipam.ipv6_pool`): a
    spec wanting it with no IPv6 subnet gets the lowest free /64 of the
    host's ULA prefix (``ula_global_id``), none of ``taken6``."""
    validate_network_name(spec.name)
    pool: Pool | None = None
    if spec.ipv4:
        if not spec.subnet:
            raise InvalidInput("an IPv4 --subnet is needed (nsnet has no IPv4 pool), or "
                               "--no-ipv4 for an IPv6-only network")
        pool = Pool.parse(spec.subnet, spec.gateway, spec.ip_range)
        if pool.subnet.version != 4:
            raise InvalidInput(f"subnet {spec.subnet} is not an IPv4 subnet")
    elif spec.subnet or spec.gateway or spec.ip_range:
        raise InvalidInput("an IPv6-only network (--no-ipv4) takes no IPv4 --subnet, "
                           "--gateway or --ip-range")
    pool6 = ipv6_pool(spec.subnet6, spec.gateway6, spec.ip_range6, enabled=spec.ipv6,
                      ipv4=spec.ipv4, ula_global_id=ula_global_id, taken=taken6)
    mode = validate_ipv6_mode(spec.ipv6_mode)
    if mode != "nat" and pool6 is None:
        raise InvalidInput("--ipv6-mode applies to a network with IPv6 (--ipv6 or an IPv6 "
                           "--subnet)")
    mtu = validate_mtu(spec.mtu) if spec.mtu is not None else DEFAULT_MTU
    servers = tuple(str(parse_ip(ip, "--dns server")) for ip in spec.dns_servers)
    if spec.driver not in DRIVERS:
        raise InvalidInput(f"--driver {spec.driver!r}: one of {', '.join(DRIVERS)}")
    net_id = net_id or new_id()
    bridge = validate_ifname(spec.bridge or f"br-{net_id[:12]}", "bridge name")
    pools = [p for p in (pool, pool6) if p]
    v4 = (str(pool.subnet), str(pool.gateway), str(pool.ip_range)) if pool else ("", "", "")
    v6 = (str(pool6.subnet), str(pool6.gateway), str(pool6.ip_range)) if pool6 else ("", "", "")
    return Network(net_id, spec.name, bridge, *v4, mtu, time.time() if now is None else now,
                   spec.masquerade, spec.internal, spec.icc, spec.dns, servers,
                   aux_addresses(pools, spec.aux_addresses), labels(spec.labels),
                   subnet6=v6[0], gateway6=v6[1], ip_range6=v6[2], ipv6_mode=mode,
                   driver=spec.driver)


def first_overlap(subnet: str, nets: Iterable[Network],
                  routes: Iterable[tuple[str, str]]) -> str | None:
    """Why ``subnet`` may not be used: it overlaps a network (either
    family), or a host route given as (destination, device) -- default
    routes excluded (pure)."""
    mine = ipaddress.ip_network(subnet)
    for net in nets:
        for theirs in (net.subnet, net.subnet6):
            if theirs and mine.overlaps(ipaddress.ip_network(theirs)):
                return f"subnet {mine} overlaps network {net.name!r} ({theirs})"
    for dst, dev in routes:
        if mine.overlaps(ipaddress.ip_network(dst, strict=False)):
            return f"subnet {mine} overlaps route {dst} dev {dev} in the host namespace"
    return None


class Networks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bridge = BridgeDriver(ctx)
        # driver name -> driver; the facade registers the overlay's (#17)
        self.drivers: dict[str, NetworkDriver] = {"bridge": self.bridge}
        # driver name -> what makes it, on first use: a command that meets no
        # overlay network never imports the overlay driver (#15)
        self.makers: dict[str, Callable[[], NetworkDriver]] = {}

    def driver(self, net: Network | None = None, kind: str = "") -> NetworkDriver:
        """The driver of ``net`` (or named ``kind``; the bridge's by default)."""
        name = net.driver if net is not None else (kind or "bridge")
        driver = self._known(name)
        if driver is None:
            raise InvalidInput(f"network driver {name!r} is not available")
        return driver

    def _known(self, name: str) -> NetworkDriver | None:
        if name not in self.drivers and name in self.makers:
            self.drivers[name] = self.makers[name]()  # kept if making fails: the
            del self.makers[name]  # next call reports the real error again
        return self.drivers.get(name)

    def prepare(self, net: Network) -> Network:
        """``net`` with what only this host knows filled in: its link group
        (unique among this host's networks, see :data:`LINK_GROUPS`) and
        what its driver adds (an overlay's MTU comes from the underlay's)."""
        if not net.link_group:
            net = dataclasses.replace(net, link_group=pick_link_group(
                self.ctx.store.link_groups()))
        prepare = getattr(self.driver(net), "prepare", None)
        return prepare(net) if prepare else net

    def quiesce(self, net_id: str, device: str, driver: str) -> None:
        """Before the endpoints of a network being removed go: the driver's
        optional ``quiesce`` hook (making the bulk deletion cheaper)."""
        hook = getattr(self._known(driver), "quiesce", None)  # unknown: teardown says so
        if hook:
            hook(net_id, device)

    def list(self, with_endpoints: bool = True) -> list[Network]:
        return self.ctx.store.networks(with_endpoints)

    def get(self, name: str) -> Network:
        net = self.ctx.store.network(name)
        if net is None:
            raise NotFound(f"network {name!r} does not exist")
        return net

    def find(self, name: str) -> Network | None:
        return self.ctx.store.network(name)

    def validate(self, net: Network) -> None:
        """Everything that can refuse a new network, before anything is made."""
        if self.ctx.store.network(net.name):
            raise AlreadyExists(f"network {net.name!r} already exists")
        self.driver(net).validate(net)
        rtnl = self.ctx.rtnl
        for subnet in (s for s in (net.subnet, net.subnet6) if s):
            mine = ipaddress.ip_network(subnet)
            family = k.INET6 if mine.version == 6 else k.INET
            clashing = [r for r in rtnl.routes(family) if not r.is_default
                        and not _kernel_own6(r.dst)
                        and mine.overlaps(ipaddress.ip_network(r.dst, strict=False))]

            def dev(oif: int) -> str:  # only a clashing route is named: a lookup, not a dump
                link = rtnl.find_link(index=oif) if oif else None
                return link.name if link else f"if{oif}"

            why = first_overlap(subnet, self.ctx.store.networks(with_endpoints=False),
                                ((r.dst, dev(r.oif)) for r in clashing))
            if why:
                raise Conflict(why)

    def taken6(self) -> list[str]:
        """IPv6 subnets a ULA pick must avoid: other networks' and the host's
        routes (the kernel's own fe80::/64 and multicast ones aside)."""
        nets = [n.subnet6 for n in self.ctx.store.networks(with_endpoints=False) if n.subnet6]
        routes = [r.dst for r in self.ctx.rtnl.routes(k.INET6)
                  if not r.is_default and not _kernel_own6(r.dst)]
        return nets + routes


def _kernel_own6(dst: str) -> bool:
    """Link-local and multicast routes every IPv6 interface gets."""
    net = ipaddress.ip_network(dst, strict=False)
    return net.version == 6 and (net.is_link_local or net.is_multicast)
