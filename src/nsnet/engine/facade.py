"""The engine's facade: lock -> plan -> journal -> apply -> commit.

An :class:`Engine` is bound to a *host* network namespace given as a
parameter (a name under ``netns_dir``, a path, or the caller's own), a
state directory and a netns directory.  It never assumes the process sits
in the host namespace: sockets are opened inside the namespace they act on.

Each public operation takes the state lock, asks the resources to plan
(every check before the kernel is touched), records a typed intent, asks
the resources to apply, and commits the records with the intent's removal
in one transaction.  The facade is the only place that composes resources
(see :mod:`nsnet.engine.context` for the layering): the per-resource logic
lives in namespaces.py, networks.py (with the network-driver seam),
endpoints.py, ports.py and probes.py.

What only some commands use is composed on first use, and its module
imported then: the overlay driver (a network of ``driver="overlay"``),
point-to-point links (topologies) and probes (ping, check).  Every nsnet
command imports this module; importing those for all of them made every
command's start ~60 ms slower than before #15 (tests/unit/
test_startup_imports.py keeps them out of a small command's start).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from .. import kernel as k
from ..config import DEFAULT_ETC_NETNS_DIR, DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR, Config
from ..crash import crashpoint
from ..dns import DnsControl
from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, NsnetError
from ..firewall import FirewallDriver
from ..firewall import rules as fw
from ..model import (
    HANDOFF_PATH,
    ConnectOptions,
    Endpoint,
    Namespace,
    Network,
    NetworkSpec,
    PortMap,
    Published,
    validate_netns_name,
)
from ..state import StateLock, Store
from ..state.trust import check_trusted_dir
from .context import (
    IP_FORWARD,
    Context,
    Progress,
    Steps,
    raise_nofile,
    refusal,
    require_root,
    unique_ns_names,
)
from .dns_sync import DnsSync
from .endpoints import (
    ConnectPlan,
    Endpoints,
    born_with,
    check_connect_options,
    published,
    reborn_with,
)
from .firewall_sync import FirewallSync
from .intents import (
    ConnectIntent,
    DeleteIntent,
    DnsIntent,
    EndpointRef,
    Intent,
    LinkIntent,
    NetworkCreateIntent,
    NetworkRef,
    NsAddIntent,
    PortsIntent,
    Registry,
)
from .namespaces import Namespaces
from .networks import DriverFact, Networks, plan_network, wants_ula
from .ports import Ports

if TYPE_CHECKING:  # imported where used: reconcile is ~5% of every command's start
    from .. import reconcile as rc
    from .links import Links, P2PLink
    from .overlay import OverlayDriver
    from .probes import CheckResult, Probes

__all__ = ["Engine"]


class _Scope:
    """The intent of the operation in progress.  A namespace someone else
    created meanwhile is *spared*: the rollback gets a narrower intent (a new
    value; the recorded one is never edited)."""

    def __init__(self, op: int, intent: Intent) -> None:
        self.op = op
        self.intent = intent
        self.spared: set[str] = set()

    def spare(self, name: str) -> None:
        self.spared.add(name)

    def rollback_intent(self) -> Intent:
        if self.spared and isinstance(self.intent, (ConnectIntent, NsAddIntent)):
            return self.intent.replace(create_ns=tuple(
                n for n in self.intent.create_ns if n not in self.spared))
        return self.intent


class Engine:
    def __init__(self, host_netns: str | None = None, state_dir: str = DEFAULT_STATE_DIR,
                 netns_dir: str = DEFAULT_NETNS_DIR, etc_netns_dir: str = DEFAULT_ETC_NETNS_DIR,
                 lock_timeout: float | None = None,
                 notify: Callable[[str], None] | None = None,
                 firewall: FirewallDriver | None = None, *, config: Config | None = None) -> None:
        """Open the host namespace, the state store and the lock: nothing
        else (no kernel change, no recovery).  :meth:`open` is the entry
        point the CLI, CNI and Docker plugins use: it checks root first and
        then starts the engine (:meth:`start`).

        ``config`` gives every setting at once (see :class:`nsnet.config.Config`);
        without it, the arguments do, and the environment is read once for
        the lock timeout (and every NSNET_* value checked, so a bad one is a
        clear error before anything)."""
        if config is None:
            env = Config.from_env()
            config = Config(host_netns, state_dir, netns_dir, etc_netns_dir,
                            env.lock_timeout if lock_timeout is None else lock_timeout,
                            env.store_timeout)
        self.config = config
        netns_dir_abs = os.path.abspath(config.netns_dir)
        # root writes there: refuse directories another user owns or can write
        check_trusted_dir(netns_dir_abs, "netns directory")
        check_trusted_dir(config.etc_netns_dir, "etc-netns directory")
        host = self._open_host(config.host_netns, netns_dir_abs)
        store = Store(config.state_dir)
        lock = StateLock(config.state_dir, config.lock_timeout, notify)
        dns = DnsControl(config.state_dir, host, config.host_netns, config.etc_netns_dir)
        self.ctx = Context(host, config.host_netns, store, lock, netns_dir_abs,
                           config.etc_netns_dir, dns, firewall, config.store_timeout)
        self.journal = Registry(store)
        self.fw = FirewallSync(self.ctx)
        self.dns_sync = DnsSync(self.ctx, self.journal)
        self.namespaces = Namespaces(self.ctx)
        self.nets = Networks(self.ctx)
        self.nets.makers["overlay"] = lambda: self.overlay  # #17
        self.endpoints = Endpoints(self.ctx)
        self.published = Ports(self.ctx)
        self._register_intents()
        self._recovered: list[str] = []

    # composed on first use (see the module's doc)
    @cached_property
    def overlay(self) -> OverlayDriver:
        from .overlay import OverlayDriver

        return OverlayDriver(self.ctx, self.nets.bridge, DriverFact)

    @cached_property
    def probes(self) -> Probes:
        from .probes import Probes

        return Probes(self.ctx)

    @cached_property
    def links(self) -> Links:
        from .links import Links

        return Links(self.ctx)

    @classmethod
    def open(cls, host_netns: str | None = None, state_dir: str = DEFAULT_STATE_DIR,
             netns_dir: str = DEFAULT_NETNS_DIR, etc_netns_dir: str = DEFAULT_ETC_NETNS_DIR,
             lock_timeout: float | None = None,
             notify: Callable[[str], None] | None = None,
             firewall: FirewallDriver | None = None, *,
             config: Config | None = None) -> Engine:
        """Check root, open the engine and :meth:`start` it."""
        require_root()
        engine = cls(host_netns, state_dir, netns_dir, etc_netns_dir, lock_timeout, notify,
                     firewall, config=config)
        try:
            return engine.start()
        except BaseException:
            engine.close()
            raise

    def start(self) -> Engine:
        """The explicit start-up step: raise the open-files limit (a bulk
        connect holds a handle per namespace of a chunk) and settle what a
        dead nsnet left half done in the journal, so even a read sees a
        settled state."""
        raise_nofile()
        if self.ctx.store.journal():
            with self.exclusive():
                pass
        return self

    @staticmethod
    def _open_host(host_netns: str | None, netns_dir: str) -> k.Netns:
        if host_netns is None:
            return k.current_netns()
        path = host_netns if "/" in host_netns else os.path.join(
            netns_dir, validate_netns_name(host_netns))
        try:
            return k.open_netns(path, host_netns)
        except OSError as exc:
            raise NotFound(f"host namespace {host_netns!r}: {exc.strerror}") from None

    def _register_intents(self) -> None:
        """Kind -> how to settle it: the one table recovery and rollbacks use
        (looked up when used, so a handler can be replaced on an instance)."""
        j = self.journal
        j.rollback(ConnectIntent, lambda intent: self._rollback_create(intent))
        j.rollback(NsAddIntent, lambda intent: self._rollback_create(intent))
        j.rollback(NetworkCreateIntent, lambda intent: self._rollback_network_create(intent))
        j.rollback(PortsIntent, lambda _intent: self.fw.sync())
        j.rollback(LinkIntent, lambda intent: self.links.remove(intent.node, intent.ifname))
        j.roll_forward(DeleteIntent, lambda op, intent: self._roll_forward_delete(op, intent))
        j.roll_forward(DnsIntent, lambda op, intent: self.dns_sync.settle(op, intent))

    def close(self) -> None:
        if "overlay" in self.__dict__:  # made (cached_property)
            self.overlay.close()
        self.ctx.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # handles, for callers that need one (tests, doctor)
    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def lock(self) -> StateLock:
        return self.ctx.lock

    @property
    def host(self) -> k.Netns:
        return self.ctx.host

    @property
    def dns(self) -> DnsControl:
        return self.ctx.dns

    @property
    def rtnl(self) -> k.Rtnl:
        return self.ctx.rtnl

    @property
    def firewall(self) -> FirewallDriver:
        return self.ctx.firewall

    @property
    def netns_dir(self) -> str:
        return self.ctx.netns_dir

    @property
    def etc_netns_dir(self) -> str:
        return self.ctx.etc_netns_dir

    def ns_path(self, name: str) -> str:
        return self.ctx.ns_path(name)

    # ------------------------------------------------------- crash safety
    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the state lock; the outermost holder first finishes or rolls
        back whatever a dead nsnet process left in the journal."""
        with self.ctx.lock as lock:
            if lock.depth == 1:
                for what in self.recover():
                    self._recovered.append(what)
                    lock.notify(f"nsnet: {what} left by an nsnet process that died")
            yield

    @contextmanager
    def _intent(self, intent: Intent) -> Iterator[_Scope]:
        """Record the intent before touching the kernel; on error, undo now
        (the registry says how).  If the process dies instead, :meth:`recover`
        undoes it later."""
        store = self.ctx.store
        with store.transaction():
            scope = _Scope(self.journal.add(intent), intent)
        crashpoint(f"{intent.kind}:journaled")
        try:
            yield scope
        except BaseException:
            self.journal.undo(scope.rollback_intent())
            with store.transaction():
                store.journal_remove(scope.op)
            raise

    def recover(self) -> list[str]:
        """Finish (deletions) or roll back (creations) interrupted operations."""
        done = []
        for op, intent in self.journal.pending():
            try:
                self.journal.settle(op, intent)
            except NsnetError as exc:
                # Keep the intent for a later try rather than block every command.
                done.append(f"could not yet settle an interrupted {intent.what} ({exc})")
                continue
            verb = "finished" if intent.forward else "rolled back"
            done.append(f"{verb} an interrupted {intent.what}")
        return done

    # ------------------------------------------------------------ namespaces
    def ns_list(self) -> list[Namespace]:
        return self.namespaces.list()

    def recorded_namespaces(self, names: Iterable[str] | None = None) -> dict[str, bool]:
        """Every namespace nsnet recorded (or those of ``names``, by key), and
        whether nsnet created it."""
        return {n: owned for n, (_, owned) in self.store.namespaces(names).items()}

    def owned_namespaces(self, names: Iterable[str] | None = None) -> set[str]:
        """Names of the namespaces nsnet created (and will remove); of
        ``names`` only, if given (by key, not every record)."""
        return self.namespaces.owned(names)

    def refuse_foreign(self, namespaces: Iterable[str] = (),
                       links: Mapping[str, str | None] | None = None) -> None:
        """Refuse, before anything is changed, names held by objects nsnet did
        not create: namespaces it has no record of owning, and host links that
        are not the caller's own (``links``: name -> the ownership alias nsnet
        gave it, None where it must not exist).  The lab (and any composite
        command) checks here rather than re-implementing ownership."""
        self.namespaces.refuse_foreign(namespaces)
        self.endpoints.refuse_taken_links(links or {})

    def ns_exists(self, name: str) -> bool:
        """Whether ``name`` is a mounted namespace in the netns directory."""
        return self.ctx.ns_exists(name)

    def ns_add(self, names: list[str]) -> list[Namespace]:
        names = unique_ns_names(names)
        with self.exclusive():
            self.namespaces.check_new(names)
            with self._intent(NsAddIntent(create_ns=tuple(names))) as scope:
                self.namespaces.create(names, taken=scope.spare)
                with self.store.transaction():
                    self.store.add_namespaces((n, self.ns_path(n), True) for n in names)
                    self.store.journal_remove(scope.op)
            crashpoint("ns_add:committed")
        return [Namespace(n, self.ns_path(n), True) for n in names]

    def ns_rm(self, names: list[str]) -> None:
        names = unique_ns_names(names)
        with self.exclusive():
            self.namespaces.check_removable(names)
            eps = [e for n in names for e in self.store.endpoints_of_netns(n)]
            self._delete(eps, namespaces=names)

    def open_ns(self, name: str) -> k.Netns:
        return self.ctx.open_ns(name)

    def exec(self, name: str, argv: list[str]) -> None:
        """Replace this process by ``argv`` run inside namespace ``name``."""
        self.namespaces.exec(name, argv)

    def snapshot(self, netns: str | None = None) -> k.Snapshot:
        """Links, addresses and routes of a namespace (the host's if None)."""
        return self.ctx.snapshot(netns)

    def snapshot6(self, netns: str) -> k.Snapshot:
        """Links, IPv6 addresses and main-table IPv6 routes of a namespace."""
        return self.ctx.snapshot6(netns)

    def host_links(self) -> dict[str, k.Link]:
        """The host namespace's links by name (one dump)."""
        return self.ctx.rtnl.link_by_name()

    # -------------------------------------------------------------- networks
    def networks(self, with_endpoints: bool = True) -> list[Network]:
        """Every network; ``with_endpoints=False``: without their endpoints
        (one light query, for callers that need names, subnets, bridges)."""
        return self.nets.list(with_endpoints)

    def endpoint_counts(self) -> dict[str, int]:
        """Network name -> its number of endpoints (one counting query)."""
        return self.ctx.store.endpoint_counts()

    def network(self, name: str) -> Network:
        return self.nets.get(name)

    def find_network(self, name: str) -> Network | None:
        """The network named ``name``, or None."""
        return self.nets.find(name)

    def network_create(self, spec: NetworkSpec) -> Network:
        net = plan_network(spec) if not wants_ula(spec) else None
        with self.exclusive():
            if net is None:  # --ipv6 without a subnet: the host's ULA pool picks one
                taken6 = self.nets.taken6()
                if spec.driver == "overlay":  # the cluster's v6 subnet, or none of its (#16)
                    spec = self.overlay.with_cluster_subnet6(spec)
                    taken6 = [*taken6, *self.overlay.taken6()]
                with self.store.transaction():
                    gid = self.store.ula_global_id()
                net = plan_network(spec, ula_global_id=gid, taken6=taken6)
            net = self.nets.prepare(net)
            self.nets.validate(net)
            driver = self.nets.driver(net)
            routes = not net.internal
            was_off = routes and net.has_ipv4 and not self.ctx.forwarding_on()
            was6_off = routes and net.has_ipv6 and not self.ctx.forwarding6_on()
            with self._intent(NetworkCreateIntent(net.id, net.bridge, was_off, was6_off,
                                                  net.driver, net.name)) as scope:
                driver.setup(net)
                others = self.store.networks(with_endpoints=False)
                # the first IPv6 network brings the ip6 table's fixed part
                first6 = net.has_ipv6 and not any(o.has_ipv6 for o in others)
                cmds = (fw.skeleton6() if first6 and others else []) + fw.network_add(net, others)
                self.fw.apply(cmds, skeleton=not others, ipv6=net.has_ipv6)
                crashpoint("network_create:firewall")
                with self.store.transaction():
                    self.store.add_network(net)
                    self.store.journal_remove(scope.op)
            crashpoint("network_create:committed")
        return net

    def ula_subnet(self, taken: Iterable[str] = ()) -> str:
        """The /64 of the host's unique-local pool ``--ipv6`` without a subnet
        would get now (another IPAM, Docker's plugin, asks it for a pool):
        overlapping no network's, no host route's and none of ``taken``."""
        from ..ipam.ula import pick_subnet

        with self.exclusive():
            with self.store.transaction():
                gid = self.store.ula_global_id()
            return str(pick_subnet(gid, [*self.nets.taken6(), *taken]))

    def _rollback_network_create(self, intent: NetworkCreateIntent) -> None:
        self.nets.driver(kind=intent.driver).teardown(intent.id, intent.bridge,
                                                      unmarked_too=True)
        if intent.driver == "overlay":  # its cluster network, if this create made it
            self.overlay.forget_made(intent.name, intent.id)
        self.fw.sync()
        if intent.forwarding_was_off:
            self.ctx.restore_forwarding_off()
        if intent.forwarding6_was_off:
            self.ctx.restore_forwarding6_off()

    def network_rm(self, name: str, force: bool = False) -> None:
        with self.exclusive():
            net = self.network(name)
            if net.endpoints and not force:
                names = ", ".join(e.netns for e in net.endpoints[:5])
                more = "..." if len(net.endpoints) > 5 else ""
                raise Conflict(f"network {name!r} has {len(net.endpoints)} endpoint(s) "
                               f"({names}{more}); disconnect them or use --force")
            self._delete(list(net.endpoints), network=net)

    def networks_rm(self, names: list[str], force: bool = False) -> None:
        """Remove several networks, all or nothing: every name is checked
        (exists; no endpoints unless ``force``) before any is removed."""
        if not names:
            raise InvalidInput("no network name given")
        with self.exclusive():
            known = self.store.endpoint_counts()  # name -> endpoints, not every endpoint
            # an overlay network this host does not use: removed from the cluster
            # (refused while any host has endpoints on it) -- #17
            cluster = [n for n in names if n not in known and self.overlay.spec_of(n)]
            names = [n for n in names if n not in cluster]
            for name in cluster:
                self.overlay.delete_cluster_network(name)
            if not names:
                return
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFound(refusal(missing, "does not exist", "do not exist", names,
                                       "removed", kind="network"))
            busy = [n for n in names if known[n] and not force]
            if busy and len(names) > 1:
                raise Conflict(refusal(busy, "has endpoints", "have endpoints", names,
                                       "removed", kind="network") + " (disconnect them or "
                               "use --force)")
            for name in dict.fromkeys(names):
                self.network_rm(name, force)

    def network_prune(self) -> list[str]:
        removed = []
        with self.exclusive():
            for net in self.store.networks():
                if not net.endpoints:
                    self.network_rm(net.name)
                    removed.append(net.name)
        return removed

    # ------------------------------------------------------------- endpoints
    def endpoints_of(self, netns: str) -> list[Endpoint]:
        """The endpoints recorded in namespace ``netns`` (any network)."""
        return self.store.endpoints_of_netns(netns)

    def connect(self, network: str, namespaces: list[str],
                opts: ConnectOptions = ConnectOptions(),
                progress: Progress | None = None) -> list[Endpoint]:
        names = unique_ns_names(namespaces)
        opts = check_connect_options(opts, len(names))
        with self.exclusive():
            if any(not m.host_port for m in opts.ports):
                opts = dataclasses.replace(opts,
                                           ports=self.published.assign_ephemeral(opts.ports))
            net = self._network_here(network)
            self.published.check_publishable(net, opts.ports, opts.force_ports)
            plan = self.endpoints.plan(net, names, opts)
            if net.driver == "overlay":  # addresses from this host's blocks (#17)
                plan.endpoints = self.overlay.assign(net, plan.endpoints, opts.ip, opts.mac,
                                                     opts.ip6)
                plan.ports = [dataclasses.replace(p, ip=e.ip, ip6=e.ip6) for p in plan.ports
                              for e in plan.endpoints if e.id == p.endpoint]
            intent = ConnectIntent(
                tuple(EndpointRef(e.id, e.host_ifname, e.netns) for e in plan.endpoints),
                tuple(e.netns for e in plan.endpoints if e.netns in plan.create_ns),
                tuple(sorted(plan.pristine_lo)), plan.network.link_group)
            with self._intent(intent) as scope:
                self._apply_connect(plan, scope, progress)
                crashpoint("connect:applied")
                self.fw.connect(plan.network, plan.endpoints, plan.ports)
                if net.driver == "overlay":  # last: remote hosts start sending now
                    self.overlay.publish(net, plan.endpoints)
                    crashpoint("connect:published")
                with self.store.transaction():
                    self.store.add_namespaces((n, self.ns_path(n), n in plan.create_ns)
                                              for n in plan.create_ns | plan.foreign_ns)
                    self.store.add_endpoints(plan.network.id, plan.endpoints)
                    self.store.add_ports((p.endpoint, p.port) for p in plan.ports)
                    self.store.journal_remove(scope.op)
                    dns_op = self.dns_sync.intent([e.netns for e in plan.endpoints]) \
                        if plan.network.dns else 0
            crashpoint("connect:committed")
            if dns_op:
                self.dns_sync.settle(dns_op, DnsIntent(tuple(e.netns for e in plan.endpoints)))
            if net.driver == "overlay":  # this host's entries for the other hosts' endpoints
                self.overlay.sync_after_commit(net)
        return plan.endpoints

    def _network_here(self, name: str) -> Network:
        """The network ``name``; an overlay network of the cluster not yet
        used on this host is made here first (its bridge and VXLAN device)."""
        net = self.nets.find(name)
        if net is None:
            spec = self.overlay.spec_of(name)
            if spec is None:
                raise NotFound(f"network {name!r} does not exist")
            net = self.network_create(spec)
            net = self.network(net.name)
        return net

    def overlay_view(self, name: str) -> dict:
        """The cluster-wide view of overlay network ``name`` (#17): its VNI
        and which host holds which endpoint."""
        return self.overlay.view(name)

    def overlay_networks(self) -> list[dict]:
        """The cluster's overlay networks (empty when this host joined none)."""
        return [{"name": n.name, "vni": n.vni,
                 "subnet": ",".join(str(s) for s in n.subnets),  # both families (#16)
                 "endpoints": len(self.overlay.records(n.name))}
                for n in self.overlay.cluster_networks()]

    def overlay_locate(self, network: str, ip: str) -> dict:
        """Which host holds ``ip`` of overlay ``network``, alive or not, and
        whether this host's VXLAN device can reach it (doctor)."""
        return self.overlay.locate(self.network(network), ip)

    def overlay_agent(self, stop, report: Callable[[str], None]) -> None:
        """Run this host's overlay agent until ``stop`` is set (see
        :meth:`nsnet.engine.overlay.OverlayDriver.run_agent`)."""
        self.overlay.run_agent(stop, report)

    def _apply_connect(self, plan: ConnectPlan, scope: _Scope,
                       progress: Progress | None) -> None:
        steps = Steps(len(plan.create_ns) + len(plan.endpoints), progress)
        if plan.create_ns:
            # interfaces made in these namespaces are born as the network wants
            # them (IPv6 off, or on and quiet): no autoconfiguration traffic
            # floods the bridge and no per-interface sysctl write is needed.
            self.namespaces.create(list(scope.intent.create_ns),  # type: ignore[attr-defined]
                                   born_with(plan.network), steps, taken=scope.spare)
        attach = self.nets.driver(plan.network).attach_index(plan.network)
        self.endpoints.attach(plan, attach, steps)

    def _rollback_create(self, intent: ConnectIntent | NsAddIntent) -> None:
        """Undo a connect/ns add that did not commit: its host ends (marked, or
        not yet marked), then the namespaces it was creating -- only while
        they hold nothing but ``lo``."""
        self.endpoints.undo_host_ends(intent.endpoints, getattr(intent, "link_group", 0))
        self.overlay.withdraw_anywhere([r.id for r in intent.endpoints], self.ctx.notify)
        for name in intent.create_ns:
            self.namespaces.remove_if_empty(name)
        for name in getattr(intent, "pristine_lo", ()):
            self.namespaces.restore_pristine_lo(name)
        if intent.endpoints:
            self.fw.sync()

    def handed_off(self) -> set[str]:
        """Names of endpoints whose inside another manager (Docker) holds."""
        return self.ctx.handed_off()

    def connect_handoff(self, network: str, name: str,
                        opts: ConnectOptions = ConnectOptions()) -> Endpoint:
        """An endpoint whose inside another manager moves into a namespace of
        its own (Docker's remote driver: Join names the interface; Docker
        moves, renames and configures it).  The veth pair is made in the host
        namespace: the host end on the bridge, up and marked; the peer, named
        ``Endpoint.ifname``, left down for the manager to take.  ``name``
        labels the endpoint (recorded as a handed-off namespace that nsnet
        never opens, creates or removes); ``opts.ports`` are published."""
        validate_netns_name(name)
        opts = check_connect_options(opts, 1)
        with self.exclusive():
            net = self.network(network)
            if net.driver == "overlay":  # addresses and records need the connect path
                raise InvalidInput(f"network {network!r} is an overlay network: attach "
                                   "namespaces with nsnet connect")
            if self.store.namespaces([name]):  # by key, not every record
                raise AlreadyExists(f"an endpoint or namespace named {name!r} already exists")
            self.published.check_publishable(net, opts.ports)
            ep = self.endpoints.plan_handoff(net, name, opts)
            ports = published(ep, net, opts.ports)
            intent = ConnectIntent((EndpointRef(ep.id, ep.host_ifname, name),),
                                   link_group=net.link_group)
            with self._intent(intent) as scope:
                attach = self.nets.driver(net).attach_index(net)
                self.endpoints.create_handoff_pair(net, ep, attach)
                self.fw.connect(net, [ep], ports)
                with self.store.transaction():
                    self.store.add_namespaces([(name, HANDOFF_PATH, False)])
                    self.store.add_endpoints(net.id, [ep])
                    self.store.add_ports((p.endpoint, p.port) for p in ports)
                    self.store.journal_remove(scope.op)
            crashpoint("connect:committed")
            if net.dns:  # the server answers the network's other endpoints
                self.dns_sync.sync([])
        return ep

    def disconnect(self, network: str, namespaces: list[str]) -> None:
        names = unique_ns_names(namespaces)
        with self.exclusive():
            net = self.network(network)
            by_ns = {e.netns: e for e in net.endpoints}
            absent = [n for n in names if n not in by_ns]
            if absent:
                raise NotFound(refusal(absent, f"is not connected to network {network!r}",
                                       f"are not connected to network {network!r}", names,
                                       "disconnected"))
            self._delete([by_ns[n] for n in names])

    # ------------------------------------------------------- published ports
    def ports(self, network: str | None = None) -> list[Published]:
        if network:
            self.network(network)
        return self.published.list(network)

    def port_add(self, network: str, netns: str, ports: tuple[PortMap, ...],
                 force: bool = False) -> list[Published]:
        """Publish more ports of an existing endpoint (one nft transaction);
        ``force`` publishes over a host process listening there."""
        return self._change_ports(network, netns, ports, adding=True, force=force)

    def port_rm(self, network: str, netns: str, ports: tuple[PortMap, ...]) -> list[Published]:
        """Stop publishing ports of an endpoint (one nft transaction)."""
        return self._change_ports(network, netns, ports, adding=False)

    def _change_ports(self, network: str, netns: str, ports: tuple[PortMap, ...],
                      adding: bool, force: bool = False) -> list[Published]:
        if not ports:
            raise InvalidInput("no port given (e.g. 8080:80/tcp)")
        with self.exclusive():
            net = self.network(network)
            ep = self.endpoints.find(net, netns)
            pubs = self.published.plan_change(net, ep, ports, adding, force)
            with self._intent(PortsIntent()) as scope:
                self.fw.apply(fw.ports_add(pubs) if adding else fw.ports_remove(pubs))
                crashpoint("ports:firewall")
                self.fw.forget_udp(pubs)
                with self.store.transaction():
                    items = [(p.endpoint, p.port) for p in pubs]
                    (self.store.add_ports if adding else self.store.remove_ports)(items)
                    self.store.journal_remove(scope.op)
        return pubs

    # -------------------------------------------------------------- deletion
    def _delete(self, eps: list[Endpoint], namespaces: list[str] | tuple[str, ...] = (),
                network: Network | None = None) -> None:
        """Remove endpoints, then namespaces, then a network, journaled so a
        crash anywhere is rolled *forward* by the next nsnet."""
        intent = DeleteIntent(tuple(e.id for e in eps), tuple(namespaces),
                              NetworkRef(network.id, network.bridge, network.driver,
                                         network.link_group) if network else None)
        with self.store.transaction():
            op = self.journal.add(intent)
        crashpoint("delete:journaled")
        self._roll_forward_delete(op, intent)

    def _roll_forward_delete(self, op: int, intent: DeleteIntent) -> None:
        ids = set(intent.endpoints)
        eps = self.store.endpoints_by_id(ids)  # by key, not every endpoint
        self._withdraw_overlay(eps)
        if intent.network and eps:
            self.nets.quiesce(intent.network.id, intent.network.bridge, intent.network.driver)
        # a whole network: its ends in one request by its link group (#15)
        self.endpoints.delete_host_ends(eps, intent.network.link_group if intent.network
                                        else 0)
        crashpoint("delete:links")
        self.fw.delete(eps, intent.network)
        moved = self.endpoints.move_default_routes(eps)
        self.namespaces.remove(intent.namespaces)
        if intent.network:
            self.nets.driver(kind=intent.network.driver).teardown(intent.network.id,
                                                                  intent.network.bridge)
            crashpoint("delete:bridge")
        with self.store.transaction():
            self.store.remove_endpoints(ids)
            self.store.remove_namespaces(intent.namespaces)
            self.endpoints.forget_idle_handoffs()
            if intent.network:
                self.store.remove_network(intent.network.id)
            for ep in moved:
                self.store.set_default_route(ep.id)
            self.store.journal_remove(op)
            touched = sorted({e.netns for e in eps} | set(intent.namespaces))
            dns_op = self.dns_sync.intent(touched) if touched or intent.network else 0
        crashpoint("delete:committed")
        if dns_op:
            self.dns_sync.settle(dns_op, DnsIntent(tuple(touched)))

    def _withdraw_overlay(self, eps: list[Endpoint]) -> None:
        """Overlay endpoints' records go first: remote hosts stop sending
        before the kernel objects go (a store out of reach fails the
        deletion here, journaled: the next command finishes it)."""
        overlay = {n.name for n in self.store.networks(with_endpoints=False)
                   if n.driver == "overlay"}
        for name in overlay & {e.network for e in eps}:
            self.overlay.withdraw(name, [e.id for e in eps if e.network == name])

    def all_endpoints(self) -> list[Endpoint]:
        """Every recorded endpoint (one query)."""
        return self.store.endpoints()

    # ------------------------------------------------ records of other layers
    def topology_objects(self, topology: str | None = None
                         ) -> dict[tuple[str, str], tuple[str, str]]:
        """(kind, key) -> (owning topology, spec) of every recorded topology
        object (of ``topology`` only, if given)."""
        return self.store.topology_objects(topology)

    def record_topology_objects(self, topology: str,
                                specs: Iterable[tuple[tuple[str, str], str]]) -> None:
        """Record objects as ``topology``'s, in one transaction."""
        with self.store.transaction():
            for (kind, key), spec in specs:
                self.store.set_topology_object(topology, kind, key, spec)

    def forget_topology_objects(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget topology objects by (kind, key), in one transaction."""
        with self.store.transaction():
            for kind, key in keys:
                self.store.drop_topology_object(kind, key)

    def attachments(self, network: str) -> list[dict]:
        """The CNI attachments recorded on ``network``."""
        return self.store.attachments(network)

    def record_attachment(self, cid: str, ifname: str, network: str, netns: str, mount: str,
                          extra: dict) -> None:
        with self.store.transaction():
            self.store.add_attachment(cid, ifname, network, netns, mount, extra)

    def forget_attachment(self, cid: str, ifname: str, network: str,
                          mount_of: str | None = None) -> None:
        """Forget a CNI attachment; with ``mount_of`` (the namespace its bind
        mount named), that namespace's record too once no endpoint is left
        in it -- in the same transaction."""
        with self.store.transaction():
            self.store.remove_attachment(cid, ifname, network)
            if mount_of and not self.store.endpoints_of_netns(mount_of):
                self.store.remove_namespaces([mount_of])

    # ------------------------------------------------ point-to-point links
    def link_add(self, link: P2PLink) -> None:
        """A veth between two namespaces, addressed, shaped and marked, under a
        journaled intent: a failure or crash part-way removes the half-made link."""
        with self.exclusive(), self._intent(LinkIntent(link.a.node, link.a.ifname)) as scope:
            self.links.add(link)
            with self.store.transaction():
                self.store.journal_remove(scope.op)

    def link_remove(self, node: str, ifname: str) -> None:
        """Remove nsnet's link ``ifname`` of ``node`` (its peer goes with it)."""
        with self.exclusive():
            self.links.remove(node, ifname)

    def route_add(self, node: str, dst: str, via: str) -> None:
        with self.exclusive():
            self.links.add_route(node, dst, via)

    def route_remove(self, node: str, dst: str) -> None:
        with self.exclusive():
            self.links.remove_route(node, dst)

    def set_forwarding(self, node: str, on: bool, ipv6: bool = False) -> None:
        """IPv4 (and with ``ipv6``, IPv6) forwarding inside namespace ``node``
        (a topology's router)."""
        self.links.set_forwarding(node, on, ipv6)

    def set_link_loss(self, node: str, rules: list[tuple[str, float, str]]) -> None:
        """Random loss on egress interfaces of ``node`` (see :mod:`.links`)."""
        self.links.set_loss(node, rules)

    # ------------------------------------------------------------- DNS, firewall
    def resolv_drift(self) -> list[str]:
        """Namespaces whose resolv.conf is not what the state says."""
        return self.dns_sync.drift()

    def firewall_desired(self) -> list[dict]:
        """The transaction that rebuilds nsnet's firewall from the state."""
        return self.fw.desired()

    def firewall_differences(self) -> list[str]:
        """Objects of nsnet's tables whose *content* differs from the state."""
        return self.fw.differences()

    def firewall_drift(self) -> int:
        """How many objects (rules, sets with their elements, chains...)
        differ from the state, by content."""
        return len(self.firewall_differences())

    # ------------------------------------------------------ reconcile / gc
    def reconcile(self, dry_run: bool = False) -> list[rc.Action]:
        """Make the kernel match the state store (see :mod:`nsnet.reconcile`)."""
        from .. import reconcile as rc

        return self._plan_and_apply(rc.plan_reconcile, dry_run)

    def gc(self, dry_run: bool = False) -> list[rc.Action]:
        """Remove nsnet-marked objects that no record claims."""
        from .. import reconcile as rc

        return self._plan_and_apply(rc.plan_gc, dry_run)

    def _plan_and_apply(self, planner, dry_run: bool) -> list[rc.Action]:
        from .. import reconcile as rc

        with self.ctx.lock:
            done = [] if dry_run else self._recovered_actions()
            services = _ReconcileServices(self)
            with self.ctx.inside_views():
                actions = planner(services)
            if not dry_run and actions:
                rc.apply(services, actions)
        return done + actions

    def _recovered_actions(self) -> list[rc.Action]:
        from .. import reconcile as rc

        done, self._recovered = self._recovered + self.recover(), []
        return [rc.Interrupted("journal", what) for what in done]

    # ---------------------------------------------------------------- probes
    def ping(self, netns: str, address: str, count: int = 4, interval: float = 1.0,
             timeout: float = 1.0) -> Iterator[k.Echo]:
        return self.probes.ping(netns, address, count, interval, timeout)

    def check(self, network: str | None = None, timeout: float = 1.0) -> list[CheckResult]:
        nets = [self.network(network)] if network else self.networks()
        return [self.probes.check_network(net, timeout) for net in nets]


class _ReconcileServices:
    """The narrow view of the engine that :mod:`nsnet.reconcile` works with
    (its :class:`~nsnet.reconcile.Services` protocol)."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine
        self._ctx = engine.ctx
        self._nets: list[Network] | None = None

    def networks(self) -> list[Network]:
        # a plan's one read of every endpoint, reused by its firewall and
        # resolv.conf checks below (each read them again: ~0.07 s at 5000)
        self._nets = self._ctx.store.networks()
        return self._nets

    def endpoints(self) -> list[Endpoint]:
        return self._ctx.store.endpoints()

    def recorded_namespaces(self) -> dict[str, bool]:
        """Every namespace nsnet recorded, and whether nsnet created it."""
        return {n: owned for n, (_, owned) in self.store.namespaces().items()}

    def owned_namespaces(self) -> set[str]:
        return self._e.namespaces.owned()

    def handed_off(self) -> set[str]:
        return self._ctx.handed_off()

    def pending_intents(self) -> list[tuple[int, str]]:
        return [(op, kind.replace("_", " ")) for op, kind, _ in self._ctx.store.journal()]

    def host_links(self) -> list[k.Link]:
        return self._ctx.rtnl.links()

    def ns_exists(self, name: str) -> bool:
        return self._ctx.ns_exists(name)

    def endpoint_view(self, netns: str, ifname: str, version: int = 4) -> k.Snapshot:
        return self._ctx.endpoint_view(netns, ifname, version)

    def forwarding6_on(self) -> bool:
        return self._ctx.forwarding6_on()

    def ensure_forwarding6(self) -> None:
        self._ctx.ensure_forwarding6()

    def network_facts(self, net: Network, links: dict[str, k.Link]) -> list:
        return self._e.nets.driver(net).facts(net, links)

    def forwarding_on(self) -> bool:
        return k.read_sysctl(self._ctx.host, IP_FORWARD) == "1"

    def firewall_differences(self) -> list[str]:
        return self._e.fw.differences(self._nets)

    def resolv_drift(self) -> list[str]:
        return self._e.dns_sync.drift(self._nets)

    def dns_wanted(self) -> bool:
        # by counts: no 5000 endpoint objects to learn that one exists
        counts = self._ctx.store.endpoint_counts()
        return any(n.dns and counts.get(n.name) for n in self._ctx.store.networks(False))

    def dns_pid(self) -> int | None:
        return self._ctx.dns.pid()

    def dns_status(self) -> dict:
        return self._ctx.dns.status()

    def delete_links(self, names: list[str]) -> None:
        self._ctx.delete_links(names)

    def release_endpoints(self, ids: set[str]) -> set[str]:
        store = self._ctx.store
        netns = {e.netns for e in store.endpoints_by_id(ids)}
        with store.transaction():
            store.remove_endpoints(ids)
            self._e.endpoints.forget_idle_handoffs()
        return netns

    def recreate_namespace(self, name: str) -> None:
        # born as connect --create births it for its endpoints' networks (#16):
        # an IPv6 network's with quiet IPv6 defaults, not IPv6 off
        store = self._ctx.store
        nets = {n.name: n for n in store.networks(with_endpoints=False)}
        mine = [nets[e.network] for e in store.endpoints_of_netns(name) if e.network in nets]
        self._e.namespaces.recreate(name, reborn_with(mine))

    def repair_network(self, name: str) -> None:
        net = self._e.network(name)
        self._e.nets.driver(net).repair(net)

    def recreate_endpoints(self, network: str, ids: set[str]) -> None:
        net = self._e.network(network)
        eps = [e for e in net.endpoints if e.id in ids]
        self._e.endpoints.delete_host_ends(eps)  # a half-broken pair goes first
        attach = self._e.nets.driver(net).attach_index(net)
        self._e.endpoints.attach(ConnectPlan(net, eps, set(), set()), attach)

    def ensure_forwarding(self) -> None:
        self._ctx.ensure_forwarding()

    def sync_dns(self, namespaces: Iterable[str]) -> None:
        self._e.dns_sync.sync(namespaces)

    def sync_firewall(self) -> None:
        self._e.fw.sync()
