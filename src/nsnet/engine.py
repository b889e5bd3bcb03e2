"""The engine: validate everything, then apply, undoing on error.

An :class:`Engine` is bound to a *host* network namespace given as a
parameter (a name under ``netns_dir``, a path, or the caller's own), a
state directory and a netns directory.  It never assumes the process sits
in the host namespace: sockets are opened inside the namespace they act on.

Work is done in bulk: one netlink batch creates every veth of a chunk (peer
created directly inside its namespace, host end already enslaved), one
batch brings them up, one batch per namespace configures the inside, and
teardown deletes all host ends of an operation with a single RTM_DELLINK
by (transient) link group.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import random
import resource
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import kernel as k
from .config import check_env_settings
from .crash import crashpoint
from .dns import RESOLV_MARK, DnsControl, resolv_conf, resolver_network
from .errors import (
    AlreadyExists,
    CheckFailed,
    Conflict,
    InvalidInput,
    KernelError,
    NotFound,
    NsnetError,
    PermissionDenied,
    PoolExhausted,
)
from .firewall import FirewallDriver
from .firewall import rules as fw
from .ipam import Pool
from .model import (
    ALIAS_PREFIX,
    HANDOFF_PATH,
    ConnectOptions,
    Endpoint,
    Namespace,
    Network,
    NetworkSpec,
    PortMap,
    Published,
    bridge_alias,
    first_clash,
    parse_ip,
    validate_dns_name,
    validate_ifname,
    validate_mac,
    validate_mtu,
    validate_netns_name,
    validate_network_name,
    veth_alias,
)
from .reconcile import Action, plan_gc, plan_reconcile
from .state import StateLock, Store
from .state.trust import check_trusted_dir, ensure_trusted_dir, write_marked_file

__all__ = ["DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR", "CheckResult", "Engine", "check_ok"]

DEFAULT_STATE_DIR = "/var/lib/nsnet"
DEFAULT_NETNS_DIR = "/run/netns"
DEFAULT_ETC_NETNS_DIR = "/etc/netns"
DEFAULT_MTU = 1500
MAX_BRIDGE_PORTS = 1023  # the kernel's BR_MAX_PORTS - 1 (port 0 is reserved)
CHUNK = 256  # endpoints per kernel batch: bounds open fds and netlink buffers
NEIGH_TIDY_ABOVE = 16  # check: forget probe-made ARP entries in larger networks

# progress(done, total): steps are namespaces created plus endpoints configured
Progress = Callable[[int, int], None]


def random_mac() -> str:
    """Locally administered unicast MAC (02:xx:...)."""
    octets = [0x02] + [random.randrange(256) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


def _transient_group() -> int:
    """A link group used only for the duration of one operation, so all of
    its links can be deleted with one RTM_DELLINK (one RCU wait)."""
    return random.randrange(1 << 30, 1 << 31)


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("nsnet needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): "
                               "run it with sudo")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def kernel_errors(what: str) -> Iterator[None]:
    """Translate kernel OSErrors into KernelError at the engine boundary."""
    try:
        yield
    except OSError as exc:
        raise KernelError(f"{what}: {exc.strerror or exc}", exc.errno) from None


@dataclass(frozen=True)
class CheckResult:
    network: str
    endpoints: tuple[str, ...]  # netns names, row/column order
    reach: dict[tuple[str, str], bool]

    @property
    def ok(self) -> bool:
        return all(self.reach.values())

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [pair for pair, ok in self.reach.items() if not ok]


class _Steps:
    """Reports progress every few percent, not on every step."""

    def __init__(self, total: int, report: Progress | None) -> None:
        self.total, self.report, self.done, self.told = total, report, 0, 0
        self.every = max(1, total // 50)

    def advance(self) -> None:
        self.done += 1
        if self.report and (self.done - self.told >= self.every or self.done == self.total):
            self.report(self.done, self.total)
            self.told = self.done


@dataclass
class _Plan:
    """Everything a connect needs, decided before the kernel is touched."""

    network: Network
    endpoints: list[Endpoint]
    create_ns: set[str]
    foreign_ns: set[str]
    ports: list[Published] = field(default_factory=list)


class Engine:
    def __init__(self, host_netns: str | None = None, state_dir: str = DEFAULT_STATE_DIR,
                 netns_dir: str = DEFAULT_NETNS_DIR, etc_netns_dir: str = DEFAULT_ETC_NETNS_DIR,
                 lock_timeout: float | None = None,
                 notify: Callable[[str], None] | None = None,
                 firewall: FirewallDriver | None = None) -> None:
        require_root()
        check_env_settings()  # a bad NSNET_* value: a clear error before anything
        self.netns_dir = os.path.abspath(netns_dir)
        self.etc_netns_dir = etc_netns_dir
        # root writes there: refuse directories another user owns or can write
        check_trusted_dir(self.netns_dir, "netns directory")
        check_trusted_dir(etc_netns_dir, "etc-netns directory")
        self.host = self._open_host(host_netns)
        self.store = Store(state_dir)
        self.lock = StateLock(state_dir, lock_timeout, notify)
        self._rtnl: k.Rtnl | None = None
        self._firewall = firewall
        self.dns = DnsControl(state_dir, self.host, host_netns, etc_netns_dir)
        _raise_nofile()
        self._recovered: list[str] = []
        if self.store.journal():  # a dead nsnet left work half done: settle it first
            with self.exclusive():
                pass

    def _open_host(self, host_netns: str | None) -> k.Netns:
        if host_netns is None:
            return k.current_netns()
        path = host_netns if "/" in host_netns else self.ns_path(validate_netns_name(host_netns))
        try:
            return k.open_netns(path, host_netns)
        except OSError as exc:
            raise NotFound(f"host namespace {host_netns!r}: {exc.strerror}") from None

    def close(self) -> None:
        if self._rtnl:
            self._rtnl.close()
        self.host.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rtnl(self) -> k.Rtnl:
        if self._rtnl is None:
            self._rtnl = k.open_rtnl(self.host)
        return self._rtnl

    @property
    def firewall(self) -> FirewallDriver:
        if self._firewall is None:
            from .firewall.nft import NftablesDriver

            self._firewall = NftablesDriver(self.host)
        return self._firewall

    def ns_path(self, name: str) -> str:
        # names also come from records: a plain file name, never a way out of netns_dir
        return os.path.join(self.netns_dir, validate_netns_name(name))

    # ------------------------------------------------------- crash safety
    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the state lock; the outermost holder first finishes or rolls
        back whatever a dead nsnet process left in the journal."""
        with self.lock:
            if self.lock.depth == 1:
                for what in self.recover():
                    self._recovered.append(what)
                    self.lock.notify(f"nsnet: {what} left by an nsnet process that died")
            yield

    @contextmanager
    def _intent(self, kind: str, payload: dict,
                rollback: Callable[[dict], None]) -> Iterator[int]:
        """Record the intent before touching the kernel; on error, undo now.
        If the process dies instead, :meth:`recover` undoes it later."""
        with self.store.transaction():
            op = self.store.journal_add(kind, payload)
        crashpoint(f"{kind}:journaled")
        try:
            yield op
        except BaseException:
            rollback(payload)
            with self.store.transaction():
                self.store.journal_remove(op)
            raise

    def recover(self) -> list[str]:
        """Finish (deletions) or roll back (creations) interrupted operations."""
        done = []
        for op, kind, payload in self.store.journal():
            what = kind.replace("_", " ")
            try:
                if kind == "delete":
                    self._roll_forward_delete(op, payload)
                elif kind == "dns":
                    self._settle_dns(op, payload["namespaces"])
                else:
                    {"connect": self._rollback_create, "ns_add": self._rollback_create,
                     "network_create": self._rollback_network_create,
                     "ports": self._rollback_ports}[kind](payload)
                    with self.store.transaction():
                        self.store.journal_remove(op)
            except NsnetError as exc:
                # Keep the intent for a later try rather than block every command.
                done.append(f"could not yet settle an interrupted {what} ({exc})")
                continue
            verb = "finished" if kind in ("delete", "dns") else "rolled back"
            done.append(f"{verb} an interrupted {what}")
        return done

    # ------------------------------------------------------------ namespaces
    def ns_list(self) -> list[Namespace]:
        known = self.store.namespaces()
        nets: dict[str, list[str]] = {}
        for ep in self.store.endpoints():
            nets.setdefault(ep.netns, []).append(ep.network)
        names = set(k.list_netns(self.netns_dir)) | set(known)
        return [Namespace(n, self.ns_path(n), known.get(n, ("", False))[1], tuple(nets.get(n, ())))
                for n in sorted(names)]

    def ns_add(self, names: list[str]) -> list[Namespace]:
        names = self._unique_ns_names(names)
        with self.exclusive():
            taken = [n for n in names if os.path.lexists(self.ns_path(n))]
            if taken:
                raise AlreadyExists(_refusal(taken, "already exists", "already exist", names,
                                             "created"))
            payload = {"endpoints": [], "create_ns": names}
            with self._intent("ns_add", payload, self._rollback_create) as op:
                self._create_namespaces(names, payload)
                with self.store.transaction():
                    self.store.add_namespaces((n, self.ns_path(n), True) for n in names)
                    self.store.journal_remove(op)
            crashpoint("ns_add:committed")
        return [Namespace(n, self.ns_path(n), True) for n in names]

    def _unique_ns_names(self, names: list[str]) -> list[str]:
        if not names:
            raise InvalidInput("no namespace name given")
        for name in names:
            validate_netns_name(name)
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        if dup:
            raise InvalidInput(f"namespace {dup[0]!r} is named twice")
        return list(names)

    def _create_namespaces(self, names: list[str], intent: dict,
                           sysctls: dict[str, str] | None = None,
                           steps: _Steps | None = None) -> None:
        """Create namespaces listed in the intent; the caller's rollback removes
        them on error.  A name someone else took meanwhile is struck from the
        intent first, so the rollback never touches it."""
        with kernel_errors(f"creating namespaces in {self.netns_dir}"):
            k.ensure_netns_dir(self.netns_dir)
            for name in names:
                try:
                    k.create_netns(self.netns_dir, name, sysctls).close()
                except FileExistsError:
                    intent["create_ns"].remove(name)
                    raise AlreadyExists(f"namespace {name!r} already exists") from None
                crashpoint("netns:created")
                if steps:
                    steps.advance()

    def ns_rm(self, names: list[str]) -> None:
        names = self._unique_ns_names(names)
        with self.exclusive():
            known = self.store.namespaces(names)
            missing = [n for n in names
                       if n not in known and not k.is_netns_mount(self.ns_path(n))]
            if missing:
                raise NotFound(_refusal(missing, "does not exist", "do not exist", names,
                                        "removed"))
            foreign = [n for n in names if not known.get(n, ("", False))[1]]
            if foreign:
                raise Conflict(_refusal(foreign, "was not created by nsnet", "were not created "
                                        "by nsnet", names, "removed") +
                               f"; nsnet never deletes those (use: ip netns del {foreign[0]})")
            eps = [e for n in names for e in self.store.endpoints_of_netns(n)]
            self._delete(eps, namespaces=names)

    def open_ns(self, name: str) -> k.Netns:
        validate_netns_name(name)
        try:
            return k.open_netns(self.ns_path(name), name)
        except OSError:
            raise NotFound(f"namespace {name!r} does not exist") from None

    def exec(self, name: str, argv: list[str]) -> None:
        """Replace this process by ``argv`` run inside namespace ``name``."""
        if not argv:
            raise InvalidInput("no command given (usage: nsnet ns exec NAME -- CMD...)")
        self.open_ns(name).close()
        etc = os.path.join(self.etc_netns_dir, name)
        try:
            k.exec_in_netns(self.ns_path(name), argv, etc)
        except FileNotFoundError:
            raise NotFound(f"command {argv[0]!r} not found") from None
        except OSError as exc:
            raise KernelError(f"exec in namespace {name!r}: {exc.strerror}", exc.errno) from None

    def snapshot(self, netns: str | None = None) -> k.Snapshot:
        """Links, addresses and routes of a namespace (the host's if None)."""
        if netns is None:
            return k.snapshot(self.host)
        ns = self.open_ns(netns)
        try:
            return k.snapshot(ns)
        finally:
            ns.close()

    # -------------------------------------------------------------- networks
    def networks(self) -> list[Network]:
        return self.store.networks()

    def network(self, name: str) -> Network:
        net = self.store.network(name)
        if net is None:
            raise NotFound(f"network {name!r} does not exist")
        return net

    def network_create(self, spec: NetworkSpec) -> Network:
        validate_network_name(spec.name)
        pool = Pool.parse(spec.subnet, spec.gateway, spec.ip_range)
        if pool.subnet.version != 4:
            raise InvalidInput(f"subnet {spec.subnet}: IPv6 networks are not supported yet")
        mtu = validate_mtu(spec.mtu) if spec.mtu is not None else DEFAULT_MTU
        servers = tuple(str(parse_ip(ip, "--dns server")) for ip in spec.dns_servers)
        if any(":" in ip for ip in servers):
            raise InvalidInput("--dns: IPv6 upstream servers are not supported yet")
        net_id = uuid.uuid4().hex
        bridge = validate_ifname(spec.bridge or f"br-{net_id[:12]}", "bridge name")
        net = Network(net_id, spec.name, bridge, str(pool.subnet), str(pool.gateway),
                      str(pool.ip_range), mtu, time.time(), spec.masquerade, spec.internal,
                      spec.icc, spec.dns, servers, _aux_addresses(pool, spec.aux_addresses),
                      _labels(spec.labels))
        with self.exclusive():
            if self.store.network(spec.name):
                raise AlreadyExists(f"network {spec.name!r} already exists")
            self._check_bridge_free(bridge)
            self._check_overlap(pool)
            payload = {"id": net.id, "bridge": net.bridge}
            with self._intent("network_create", payload, self._rollback_network_create) as op:
                self._create_bridge(net)
                others = self.store.networks(with_endpoints=False)
                self._fw_apply(fw.network_add(net, others), skeleton=not others)
                crashpoint("network_create:firewall")
                with self.store.transaction():
                    self.store.add_network(net)
                    self.store.journal_remove(op)
            crashpoint("network_create:committed")
        return net

    def _check_bridge_free(self, bridge: str) -> None:
        for net in self.store.networks(with_endpoints=False):
            if net.bridge == bridge:
                raise AlreadyExists(f"bridge {bridge!r} is already used by network {net.name!r}")
        link = self.rtnl.find_link(bridge)
        if link:
            raise AlreadyExists(f"a link named {bridge!r} already exists in the host namespace "
                                "and was not created by nsnet; nothing was changed")

    def _check_overlap(self, pool: Pool) -> None:
        for net in self.store.networks(with_endpoints=False):
            if pool.subnet.overlaps(ipaddress.ip_network(net.subnet)):
                raise Conflict(f"subnet {pool.subnet} overlaps network {net.name!r} "
                               f"({net.subnet})")
        for route in self.rtnl.routes():
            if route.is_default:
                continue
            if pool.subnet.overlaps(ipaddress.ip_network(route.dst, strict=False)):
                dev = self.rtnl.find_link(index=route.oif) if route.oif else None  # no dump
                raise Conflict(f"subnet {pool.subnet} overlaps route {route.dst} dev "
                               f"{dev.name if dev else f'if{route.oif}'} in the host namespace")

    def _create_bridge(self, net: Network) -> None:
        with kernel_errors(f"creating bridge {net.bridge}"):
            rt = self.rtnl
            rt.run([k.req_new_bridge(net.bridge, net.mtu, mac=random_mac(), up=False)])
            crashpoint("bridge:created")
            index = rt.link(net.bridge).index
            self._guard_loopback(index)  # before route_localnet is ever on
            k.write_sysctls(self.host, bridge_sysctls(net))
            rt.run([k.req_add_addr(index, f"{net.gateway}/{net.prefixlen}"),
                    k.req_set_link(index=index, up=True, alias=bridge_alias(net.id))])
            crashpoint("bridge:configured")
        if not net.internal:
            self._ensure_forwarding()

    def _guard_loopback(self, index: int) -> None:
        """The bridge's tc loopback guard (see :mod:`nsnet.kernel.tc`): it lives
        and dies with the bridge, so it needs no record of its own, and no nft
        flush removes it.  Idempotent (reconcile re-adds a removed one)."""
        reqs = [k.req_clsact(index), k.req_loopback_guard(index, fw.LOCALNET_MARK)]
        for err, detail in self.rtnl.batch(reqs).errors:
            if err and err != errno.EEXIST:
                raise k.NetlinkError(err, "adding the loopback guard", detail)

    def _ensure_forwarding(self) -> None:
        """Routed networks need IPv4 forwarding in the host namespace (as
        Docker turns it on); say so when nsnet is the one turning it on."""
        with kernel_errors("enabling IPv4 forwarding"):
            if k.read_sysctl(self.host, _IP_FORWARD) != "1":
                k.write_sysctls(self.host, {_IP_FORWARD: "1"})
                self.lock.notify("nsnet: enabled IPv4 forwarding in the host namespace "
                                 "(net.ipv4.ip_forward=1)")

    # ---------------------------------------------------------------- DNS
    def _sync_dns(self, namespaces: Iterable[str]) -> None:
        """After a committed change: each touched namespace's resolv.conf
        names its resolver, and the DNS server runs iff some endpoint wants
        it.  Problems are reported, never fatal: the network itself works."""
        try:
            self._write_resolv_confs(set(namespaces))
            problems = self.dns.sync(self.store.dns_networks())
        except OSError as exc:
            problems = {"*": f"{exc.strerror or exc}"}
        for net, why in sorted(problems.items()):
            self.lock.notify(f"nsnet: error: embedded DNS cannot serve network {net!r}: {why} "
                             "(the network works; names do not resolve on it)")

    def _wanted_resolv(self, namespaces: Iterable[str]) -> dict[str, str | None]:
        """The resolv.conf text the state wants in each namespace (None: none)."""
        names = set(namespaces)
        names -= self.store.handed_off(names)  # their manager writes theirs
        nets = {n.name: n for n in self.store.networks(with_endpoints=False)}
        eps: dict[str, list[Endpoint]] = {}
        for ep in self.store.endpoints_of_namespaces(names):  # by index, not all of them
            eps.setdefault(ep.netns, []).append(ep)
        out: dict[str, str | None] = {}
        for name in names:
            net = resolver_network(eps.get(name, []), nets)
            out[name] = resolv_conf(net) if net else None
        return out

    def _dns_intent(self, namespaces: list[str]) -> int:
        """Inside a change's commit: journal the DNS work that follows it, so a
        crash between the commit and that work is finished by the next nsnet
        (never a stale or missing resolv.conf, or a server nobody starts)."""
        return self.store.journal_add("dns", {"namespaces": namespaces})

    def _settle_dns(self, op: int, namespaces: Iterable[str]) -> None:
        self._sync_dns(namespaces)
        with self.store.transaction():
            self.store.journal_remove(op)

    def _write_resolv_confs(self, namespaces: set[str]) -> None:
        """Each file is recorded in the state before it is written and
        forgotten after it is removed, so a crash in between leaves a record
        that reconcile follows (never a file nobody knows is nsnet's)."""
        wanted = self._wanted_resolv(namespaces)
        recorded = self.store.resolv_files(namespaces)
        new = sorted(n for n, text in wanted.items() if text is not None and n not in recorded)
        if new:
            with self.store.transaction():
                self.store.add_resolv_files(new)
        gone = [name for name, text in sorted(wanted.items())
                if not self._write_resolv(name, text) and (name in recorded or name in new)]
        if gone:
            with self.store.transaction():
                self.store.remove_resolv_files(gone)

    def _resolv_path(self, netns: str) -> str:
        return os.path.join(self.etc_netns_dir, netns, "resolv.conf")

    def _read_resolv(self, netns: str) -> str | None:
        try:
            with open(self._resolv_path(netns)) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _write_resolv(self, netns: str, text: str | None) -> bool:
        """Write (or, with None, remove) /etc/netns/NS/resolv.conf -- only a
        file nsnet wrote: someone else's (or a symlink) is left alone.  True
        if nsnet's file is there afterwards."""
        if text is not None:
            ensure_trusted_dir(self.etc_netns_dir, "etc-netns directory")
        try:  # relative to checked directory fds, never through a symlink
            return write_marked_file(self.etc_netns_dir, netns, "resolv.conf", text,
                                     RESOLV_MARK)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ELOOP, errno.ENOTDIR):
                raise
            # someone else's folder: left alone, the other namespaces still served
            self.lock.notify(f"nsnet: warning: {os.path.join(self.etc_netns_dir, netns)}: "
                             f"{exc.strerror}")
            return False

    def resolv_drift(self) -> list[str]:
        """Namespaces whose resolv.conf is not what the state says: every
        namespace with an endpoint and every file nsnet recorded writing
        (O(nsnet's own files), never a scan of /etc/netns)."""
        recorded = self.store.resolv_files()
        wanted = self._wanted_resolv(self.store.netns_with_endpoints() | recorded)
        out = []
        for name, text in sorted(wanted.items()):
            current = self._read_resolv(name)
            if current is not None and not current.startswith(RESOLV_MARK):
                if name in recorded:  # someone else's file now: forget ours
                    out.append(name)
            elif current != text or (text is None and name in recorded):
                out.append(name)
        return out

    # --------------------------------------------------------------- firewall
    def _fw_apply(self, commands: list[dict], skeleton: bool = False) -> None:
        """One atomic transaction.  The fixed skeleton is left out unless
        asked for or missing (its idempotent re-add costs the kernel an RCU
        grace period, ~14 ms, per base chain update): a transaction that
        fails is without effect, and is retried once with the skeleton first."""
        if skeleton:
            self.firewall.apply(fw.skeleton() + commands)
            return
        try:
            self.firewall.apply(commands)
        except KernelError:
            self.firewall.apply(fw.skeleton() + commands)

    def firewall_desired(self) -> list[dict]:
        """The transaction that rebuilds nsnet's firewall from the state."""
        return fw.full(self.store.networks(), self.store.published())

    def firewall_differences(self) -> list[str]:
        """Objects of nsnet's tables whose *content* differs from the state
        (a same-count edit too: a rule's verdict, a map element's value).
        The driver compares the live tables with the kernel's own rendering
        of :meth:`firewall_desired` (see :mod:`nsnet.firewall`); off the hot
        path: reconcile, its dry run and the sync after a rollback only."""
        return self.firewall.drift(self.firewall_desired())

    def firewall_drift(self) -> int:
        """How many objects (rules, sets with their elements, chains...)
        differ from the state, by content."""
        return len(self.firewall_differences())

    def _sync_firewall(self) -> None:
        """Rebuild the firewall if it drifted (after rollbacks; O(state))."""
        if self.firewall_drift():
            self.firewall.apply(self.firewall_desired())

    def _delete_bridge(self, net_id: str, bridge: str, unmarked_too: bool = False) -> None:
        """Delete the bridge if it carries this network's mark (or, when rolling
        back its own creation, no mark yet)."""
        link = self.rtnl.find_link(bridge)
        marks = {bridge_alias(net_id)} | ({""} if unmarked_too else set())
        if link and link.kind == "bridge" and link.alias in marks:
            with kernel_errors(f"deleting bridge {bridge}"):
                self.rtnl.run([k.req_del_link(index=link.index)])

    def _rollback_network_create(self, payload: dict) -> None:
        self._delete_bridge(payload["id"], payload["bridge"], unmarked_too=True)
        self._sync_firewall()

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
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFound(_refusal(missing, "does not exist", "do not exist", names,
                                        "removed", kind="network"))
            busy = [n for n in names if known[n] and not force]
            if busy and len(names) > 1:
                raise Conflict(_refusal(busy, "has endpoints", "have endpoints", names,
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
    def connect(self, network: str, namespaces: list[str],
                opts: ConnectOptions = ConnectOptions(),
                progress: Progress | None = None) -> list[Endpoint]:
        names = self._unique_ns_names(namespaces)
        self._check_connect_options(opts, len(names))
        with self.exclusive():
            if any(not m.host_port for m in opts.ports):
                opts = dataclasses.replace(opts, ports=self._assign_ephemeral(opts.ports))
            plan = self._plan_connect(self.network(network), names, opts)
            payload = {"endpoints": [[e.id, e.host_ifname, e.netns] for e in plan.endpoints],
                       "create_ns": [e.netns for e in plan.endpoints if e.netns in plan.create_ns]}
            with self._intent("connect", payload, self._rollback_create) as op:
                self._apply_connect(plan, payload, progress)
                crashpoint("connect:applied")
                self._fw_connect(plan)
                with self.store.transaction():
                    self.store.add_namespaces((n, self.ns_path(n), n in plan.create_ns)
                                              for n in plan.create_ns | plan.foreign_ns)
                    self.store.add_endpoints(plan.network.id, plan.endpoints)
                    self.store.add_ports((p.endpoint, p.port) for p in plan.ports)
                    self.store.journal_remove(op)
                    dns_op = self._dns_intent([e.netns for e in plan.endpoints]) \
                        if plan.network.dns else 0
            crashpoint("connect:committed")
            if dns_op:
                self._settle_dns(dns_op, [e.netns for e in plan.endpoints])
        return plan.endpoints

    @staticmethod
    def _check_connect_options(opts: ConnectOptions, count: int) -> None:
        static = [flag for flag, v in (("--ip", opts.ip), ("--mac", opts.mac),
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
        if opts.ip:
            parse_ip(opts.ip, "--ip")
        for alias in opts.aliases:
            validate_dns_name(alias)

    def _plan_connect(self, net: Network, names: list[str], opts: ConnectOptions) -> _Plan:
        self._check_publishable(net, opts.ports, opts.force_ports)
        taken = {e.netns for e in net.endpoints}
        already = [n for n in names if n in taken]
        if already:
            raise AlreadyExists(_refusal(already, f"is already connected to network "
                                         f"{net.name!r}", f"are already connected to network "
                                         f"{net.name!r}", names, "connected"))
        if len(net.endpoints) + len(names) > MAX_BRIDGE_PORTS:
            raise PoolExhausted(f"network {net.name!r} would need {len(net.endpoints) + len(names)}"
                                f" bridge ports; a Linux bridge holds at most {MAX_BRIDGE_PORTS}")
        missing = {n for n in names if not k.is_netns_mount(self.ns_path(n))}
        if missing and not opts.create:
            first = sorted(missing)[0]
            raise NotFound(_refusal(sorted(missing), "does not exist", "do not exist", names,
                                    "connected") + f" (create it with 'nsnet ns add {first}' "
                           "or pass --create)")
        for name in missing:
            if os.path.lexists(self.ns_path(name)):
                raise AlreadyExists(f"{self.ns_path(name)} exists and is not a namespace")
        pool = Pool.parse(net.subnet, net.gateway, net.ip_range)
        used = self.store.used_addresses(net.id) | {ip for _, ip in net.aux_addresses}
        ips = ([pool.check_static(opts.ip, used)] if opts.ip else pool.allocate(used, len(names)))
        host_names = self._host_ifnames(names, opts)
        known = self.store.namespaces(names)
        foreign = {n for n in names if n not in missing and n not in known}
        by_ns: dict[str, list[Endpoint]] = {}
        for ep in self.store.endpoints_of_namespaces(names):  # by index: these names only
            by_ns.setdefault(ep.netns, []).append(ep)
        macs = self.store.macs(net.id)  # the bridge's MACs: one query, O(this network)
        endpoints = []
        now = time.time()
        for name, ip, host_if in zip(names, ips, host_names, strict=False):
            ifname, default_route = self._inside_names(name, opts, name in missing,
                                                       by_ns.get(name, []))
            ep_id = uuid.uuid4().hex
            endpoints.append(Endpoint(
                ep_id, net.name, name, ifname, host_if or f"veth{ep_id[:7]}",
                f"{ip}/{net.prefixlen}", self._free_mac(net, opts.mac, macs), net.gateway,
                default_route, now, tuple(validate_dns_name(a) for a in opts.aliases),
                _labels(opts.labels)))
        ports = [Published(e.id, net.name, e.netns, e.ip, m) for e in endpoints
                 for m in opts.ports]
        return _Plan(net, endpoints, missing, foreign, ports)

    def _free_mac(self, net: Network, mac: str | None, used: set[str] | None = None) -> str:
        """``mac``, or a random one, not used on this bridge yet: two ports with
        one MAC make the bridge flap its forwarding entry.  ``used``: the
        bridge's MACs read once by the caller (a chosen MAC joins it, so a
        batch never repeats one either); else one index lookup."""
        if mac:
            user = self.store.mac_user(net.id, mac)
            if user or (used is not None and mac.lower() in used):
                raise Conflict(f"MAC address {mac.lower()} is already used by "
                               f"{user or 'another endpoint'!r} on network {net.name!r}")
            mac = mac.lower()
        else:
            mac = random_mac()
            while mac in used if used is not None else self.store.mac_user(net.id, mac):
                mac = random_mac()
        if used is not None:
            used.add(mac)
        return mac

    # --------------------------------------------------- handed-off endpoints
    def handed_off(self) -> set[str]:
        """Names of endpoints whose inside another manager (Docker) holds."""
        return self.store.handed_off()  # by the path index

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
        self._check_connect_options(opts, 1)
        with self.exclusive():
            net = self.network(network)
            if name in self.store.namespaces():
                raise AlreadyExists(f"an endpoint or namespace named {name!r} already exists")
            self._check_publishable(net, opts.ports)
            ep = self._handoff_endpoint(net, name, opts)
            ports = [Published(ep.id, net.name, name, ep.ip, m) for m in opts.ports]
            plan = _Plan(net, [ep], set(), set(), ports)
            payload = {"endpoints": [[ep.id, ep.host_ifname, name]], "create_ns": []}
            with self._intent("connect", payload, self._rollback_create) as op:
                self._create_handoff_pair(net, ep)
                self._fw_connect(plan)
                with self.store.transaction():
                    self.store.add_namespaces([(name, HANDOFF_PATH, False)])
                    self.store.add_endpoints(net.id, [ep])
                    self.store.add_ports((p.endpoint, p.port) for p in ports)
                    self.store.journal_remove(op)
            crashpoint("connect:committed")
            if net.dns:  # the server answers the network's other endpoints
                self._sync_dns([])
        return ep

    def _handoff_endpoint(self, net: Network, name: str, opts: ConnectOptions) -> Endpoint:
        pool = Pool.parse(net.subnet, net.gateway, net.ip_range)
        used = self.store.used_addresses(net.id) | {ip for _, ip in net.aux_addresses}
        ip = pool.check_static(opts.ip, used) if opts.ip else pool.allocate(used, 1)[0]
        ep_id = uuid.uuid4().hex
        peer = opts.ifname or f"nsh{ep_id[:8]}"
        host = self._host_ifnames([name], opts)[0] or f"veth{ep_id[:7]}"
        if self.rtnl.find_link(peer):
            raise AlreadyExists(f"a link named {peer!r} already exists in the host namespace")
        return Endpoint(ep_id, net.name, name, peer, host, f"{ip}/{net.prefixlen}",
                        self._free_mac(net, opts.mac), net.gateway, True, time.time(),
                        tuple(validate_dns_name(a) for a in opts.aliases), _labels(opts.labels))

    def _create_handoff_pair(self, net: Network, ep: Endpoint) -> None:
        bridge = self._bridge_index(net)
        spec = k.VethSpec(ep.host_ifname, ep.ifname, self.host.fd, master=bridge, mtu=net.mtu,
                          peer_mac=k.mac_bytes(ep.mac))
        with kernel_errors(f"creating veth pair {ep.host_ifname} <-> {ep.ifname}"):
            self.rtnl.run([k.req_new_veth(spec)])
            crashpoint("connect:veths")
            hairpin = None if net.internal else True
            self.rtnl.run([k.req_set_link(ep.host_ifname, up=True, alias=veth_alias(ep.id),
                                          hairpin=hairpin)])

    def _forget_idle_handoffs(self) -> None:
        """Drop handed-off names whose endpoint is gone (inside a transaction)."""
        self.store.forget_idle_handoffs()  # by index, not every endpoint and namespace

    # ------------------------------------------------------- published ports
    def ports(self, network: str | None = None) -> list[Published]:
        if network:
            self.network(network)
        return [p for p in self.store.published() if network in (None, p.network)]

    def _check_publishable(self, net: Network, ports: tuple[PortMap, ...] | list[PortMap],
                           force: bool = False) -> None:
        """Everything that can be wrong with publishing, before anything is sent."""
        if not ports:
            return
        if net.internal:
            raise InvalidInput(f"network {net.name!r} is internal: nothing from outside can "
                               "reach it, so ports cannot be published on it")
        near = self.store.published_at(ports)
        clash = first_clash(ports, (p.port for p in near))
        if clash:
            mine, theirs = clash
            owner = next((p for p in near if p.port == theirs), None)
            where = f" (held by {owner.netns!r} on {owner.network!r})" if owner else ""
            raise AlreadyExists(f"port {mine.host_ip or '0.0.0.0'}:{mine.host_port}/"
                                f"{mine.proto} is already published{where}")
        local = {a.address for a in self.rtnl.addresses()} if any(m.host_ip for m in ports) \
            else set()
        gateways = self._gateways() if any(m.host_ip for m in ports) else {}
        for m in ports:
            if m.host_ip and m.host_ip not in local and not m.host_ip.startswith("127."):
                raise InvalidInput(f"cannot publish on {m.host_ip}: it is not an address of the "
                                   "host namespace")
            if m.host_ip in gateways:
                raise InvalidInput(f"cannot publish on {m.host_ip}: it is the gateway of network "
                                   f"{gateways[m.host_ip]!r} (traffic to a gateway is never "
                                   "a published port's)")
        if not force:
            self._check_host_listeners(ports)

    def _gateways(self) -> dict[str, str]:
        return {n.gateway: n.name for n in self.store.networks(with_endpoints=False)}

    def _check_host_listeners(self, ports: tuple[PortMap, ...] | list[PortMap]) -> None:
        """A mapping over a host service would divert the service's traffic
        to the endpoint (the DNAT comes first): refuse, naming the listener,
        as Docker's "port is already allocated" -- unless forced.  A bind
        test per mapping; the socket tables are read only for a port in use."""
        with kernel_errors("looking for listeners in the host namespace"):
            busy = k.busy_ports(self.host, [(m.proto, m.host_ip, m.host_port) for m in ports])
            if not busy:
                return
            found: dict[tuple[str, int], list[k.Listener]] = {}
            for lst in k.listeners(self.host, tuple(sorted({proto for proto, _, _ in busy}))):
                found.setdefault((lst.proto, lst.port), []).append(lst)
        gateways = set(self._gateways())
        for m in ports:
            for lst in found.get((m.proto, m.host_port), []):
                if _diverts(m, lst, gateways):
                    owner = k.socket_owner(lst.inode) or f"socket inode {lst.inode}"
                    raise Conflict(f"port {m.host_ip or '0.0.0.0'}:{m.host_port}/{m.proto} is "
                                   f"already in use in the host namespace ({lst.address}:"
                                   f"{lst.port} by {owner}); --force publishes over it "
                                   "(its traffic then goes to the endpoint)")

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
            ep = self._endpoint(net, netns)
            if adding:
                ports = self._assign_ephemeral(ports)
                self._check_publishable(net, ports, force)
                pubs = [Published(ep.id, net.name, ep.netns, ep.ip, m) for m in ports]
            else:
                held = {p.port: p for p in self.store.published(ep.id)}
                ports = _match_ephemeral(ports, held)
                missing = [m for m in ports if m not in held]
                if missing:
                    raise NotFound(f"{netns!r} on {network!r} does not publish {missing[0]}")
                pubs = [held[m] for m in ports]
            with self._intent("ports", {}, self._rollback_ports) as op:
                self._fw_apply(fw.ports_add(pubs) if adding else fw.ports_remove(pubs))
                crashpoint("ports:firewall")
                self._forget_udp(pubs)
                with self.store.transaction():
                    items = [(p.endpoint, p.port) for p in pubs]
                    (self.store.add_ports if adding else self.store.remove_ports)(items)
                    self.store.journal_remove(op)
        return pubs

    def _assign_ephemeral(self, ports: tuple[PortMap, ...]) -> tuple[PortMap, ...]:
        """Docker's ``-p 80``: host port 0 becomes the lowest port of the host
        namespace's ip_local_port_range that nsnet does not publish yet (for
        that protocol, on any address)."""
        if all(m.host_port for m in ports):
            return ports
        try:
            low, high = (int(x) for x in
                         k.read_sysctl(self.host, "net/ipv4/ip_local_port_range").split())
        except (OSError, ValueError):
            low, high = 32768, 60999
        busy = {(p.port.proto, p.port.host_port) for p in self.store.published()}
        busy |= {(m.proto, m.host_port) for m in ports}
        out = []
        for m in ports:
            if not m.host_port:
                port = next((n for n in range(low, high + 1) if (m.proto, n) not in busy), 0)
                if not port:
                    raise PoolExhausted(f"no free ephemeral host port in {low}-{high}/{m.proto}")
                busy.add((m.proto, port))
                m = PortMap(m.proto, m.host_ip, port, m.port)
            out.append(m)
        return tuple(out)

    def _rollback_ports(self, payload: dict) -> None:
        self._sync_firewall()

    def _endpoint(self, net: Network, netns: str) -> Endpoint:
        ep = next((e for e in net.endpoints if e.netns == netns), None)
        if ep is None:
            raise NotFound(f"namespace {netns!r} is not connected to network {net.name!r}")
        return ep

    def _host_ifnames(self, names: list[str], opts: ConnectOptions) -> list[str | None]:
        if not opts.host_ifname:
            return [None] * len(names)
        link = self.rtnl.find_link(opts.host_ifname)
        if link:
            owner = "nsnet" if link.alias.startswith(ALIAS_PREFIX) else "someone else"
            raise AlreadyExists(f"a link named {opts.host_ifname!r} already exists in the host "
                                f"namespace (created by {owner})")
        return [opts.host_ifname]

    def _inside_names(self, netns: str, opts: ConnectOptions, fresh: bool,
                      mine: list[Endpoint]) -> tuple[str, bool]:
        """Interface name inside the namespace, and whether it gets the default
        route; ``mine`` are its recorded endpoints on other networks."""
        present: set[str] = {e.ifname for e in mine}
        has_default = any(e.default_route for e in mine)
        if not fresh:
            snap = self.snapshot(netns)
            present |= {lk.name for lk in snap.links}
            has_default = has_default or any(r.is_default for r in snap.routes)
        if opts.ifname:
            if opts.ifname in present:
                raise AlreadyExists(f"namespace {netns!r} already has an interface "
                                    f"{opts.ifname!r}")
            return opts.ifname, not has_default
        n = 0
        while f"eth{n}" in present:
            n += 1
        return f"eth{n}", not has_default

    def _apply_connect(self, plan: _Plan, intent: dict, progress: Progress | None) -> None:
        steps = _Steps(len(plan.create_ns) + len(plan.endpoints), progress)
        if plan.create_ns:
            # IPv4-only: interfaces made in these namespaces are born without
            # IPv6, so no autoconfiguration traffic floods the bridge and no
            # per-interface sysctl write is needed later.
            self._create_namespaces(list(intent["create_ns"]), intent,
                                    {_IPV6_DEFAULT_OFF: "1"}, steps)
        bridge = self._bridge_index(plan.network)
        for start in range(0, len(plan.endpoints), CHUNK):
            chunk = plan.endpoints[start : start + CHUNK]
            self._connect_chunk(plan, bridge, chunk, steps)

    def _bridge_index(self, net: Network) -> int:
        link = self.rtnl.find_link(net.bridge)  # one lookup, not a dump of every port
        if link is None or link.alias != bridge_alias(net.id):
            raise NotFound(f"bridge {net.bridge!r} of network {net.name!r} is missing from the "
                           "host namespace")
        return link.index

    def _connect_chunk(self, plan: _Plan, bridge: int, chunk: list[Endpoint],
                       steps: _Steps | None = None) -> None:
        handles = [self.open_ns(e.netns) for e in chunk]
        try:
            reqs = [k.req_new_veth(k.VethSpec(e.host_ifname, e.ifname, ns.fd, master=bridge,
                                              mtu=plan.network.mtu, peer_mac=k.mac_bytes(e.mac)))
                    for e, ns in zip(chunk, handles, strict=True)]
            result = self.rtnl.batch(reqs)
            crashpoint("connect:veths")
            with kernel_errors("creating veth pairs"):
                for req, err, detail in result.failures(reqs):
                    raise k.NetlinkError(err, req.what, detail)
            with kernel_errors("bringing host ends up"):
                # hairpin: br_netfilter *bridges* a packet DNATed to an address on
                # the bridge it came from, so an endpoint reaching its own
                # published port goes back out of its own port
                hairpin = None if plan.network.internal else True
                self.rtnl.run([k.req_set_link(e.host_ifname, up=True, alias=veth_alias(e.id),
                                              hairpin=hairpin) for e in chunk])
            crashpoint("connect:host-up")
            for ep, ns in zip(chunk, handles, strict=True):
                with kernel_errors(f"configuring {ep.ifname} in namespace {ep.netns!r}"):
                    _configure_inside(ns, ep, ipv6_off=ep.netns in plan.create_ns)
                crashpoint("connect:inside")
                if steps:
                    steps.advance()
        finally:
            for ns in handles:
                ns.close()

    def _fw_connect(self, plan: _Plan) -> None:
        cmds = fw.endpoints_add(plan.network, plan.endpoints) + fw.ports_add(plan.ports)
        if cmds:
            self._fw_apply(cmds)
            crashpoint("connect:firewall")
            self._forget_udp(plan.ports)

    def _rollback_create(self, payload: dict) -> None:
        """Undo a connect/ns add that did not commit: its host ends (marked, or
        not yet marked), then the namespaces it was creating -- only while
        they hold nothing but ``lo``."""
        links = self.rtnl.links_named([host for _id, host, _ns in payload["endpoints"]])
        doomed = [host for ep_id, host, _ns in payload["endpoints"]
                  if host in links and links[host].kind == "veth"
                  and links[host].alias in ("", veth_alias(ep_id))]
        self._delete_links(doomed)
        for name in payload["create_ns"]:
            self._remove_if_empty(name)
        if payload["endpoints"]:
            self._sync_firewall()

    def _remove_if_empty(self, name: str) -> None:
        path = self.ns_path(name)
        if k.is_netns_mount(path):
            if {lk.name for lk in self.snapshot(name).links} <= {"lo"}:
                k.remove_netns(path)
        elif os.path.isfile(path) and os.path.getsize(path) == 0:
            os.unlink(path)  # died between creating the mount point and mounting

    def disconnect(self, network: str, namespaces: list[str]) -> None:
        names = self._unique_ns_names(namespaces)
        with self.exclusive():
            net = self.network(network)
            by_ns = {e.netns: e for e in net.endpoints}
            absent = [n for n in names if n not in by_ns]
            if absent:
                raise NotFound(_refusal(absent, f"is not connected to network {network!r}",
                                        f"are not connected to network {network!r}", names,
                                        "disconnected"))
            self._delete([by_ns[n] for n in names])

    def _delete(self, eps: list[Endpoint], namespaces: list[str] | tuple[str, ...] = (),
                network: Network | None = None) -> None:
        """Remove endpoints, then namespaces, then a network, journaled so a
        crash anywhere is rolled *forward* by the next nsnet."""
        payload = {"endpoints": [e.id for e in eps], "namespaces": list(namespaces),
                   "network": [network.id, network.bridge] if network else None}
        with self.store.transaction():
            op = self.store.journal_add("delete", payload)
        crashpoint("delete:journaled")
        self._roll_forward_delete(op, payload)

    def _roll_forward_delete(self, op: int, payload: dict) -> None:
        ids = set(payload["endpoints"])
        eps = self.store.endpoints_by_id(ids)  # by key, not every endpoint
        self._delete_host_ends(eps)
        crashpoint("delete:links")
        self._fw_delete(eps, payload["network"])
        moved = self._move_default_routes(eps)
        for name in payload["namespaces"]:
            k.remove_netns(self.ns_path(name))
            crashpoint("delete:netns")
        if payload["network"]:
            self._delete_bridge(*payload["network"])
            crashpoint("delete:bridge")
        with self.store.transaction():
            self.store.remove_endpoints(ids)
            self.store.remove_namespaces(payload["namespaces"])
            self._forget_idle_handoffs()
            if payload["network"]:
                self.store.remove_network(payload["network"][0])
            for ep in moved:
                self.store.set_default_route(ep.id)
            self.store.journal_remove(op)
            touched = sorted({e.netns for e in eps} | set(payload["namespaces"]))
            dns_op = self._dns_intent(touched) if touched or payload["network"] else 0
        crashpoint("delete:committed")
        if dns_op:
            self._settle_dns(dns_op, touched)

    def _fw_delete(self, eps: list[Endpoint], network: list[str] | None) -> None:
        """Remove the firewall entries of these endpoints (and network) in one
        transaction; every command is idempotent, so a roll-forward may rerun it."""
        pubs = self.store.published_of(e.id for e in eps)
        nets = {n.name: n for n in self.store.networks(with_endpoints=False)}
        full = self.store.network_by_id(network[0]) if network else None
        if full:  # the doomed network, with its endpoints
            nets[full.name] = full
        cmds = fw.ports_remove(pubs)
        for name in sorted({e.network for e in eps} & set(nets)):
            cmds += fw.endpoints_remove(nets[name], [e for e in eps if e.network == name])
        doomed = next((n for n in nets.values() if network and n.id == network[0]), None)
        if doomed:
            others = [n for n in nets.values() if n is not doomed]
            if not others:
                self.firewall.apply(fw.teardown())
            else:
                self._fw_apply(cmds + fw.network_remove(doomed, others))
        elif cmds:
            self._fw_apply(cmds)
        crashpoint("delete:firewall")
        self._forget_udp(pubs)

    def _forget_udp(self, pubs: list[Published]) -> None:
        ports = {(p.port.host_ip, p.port.host_port) for p in pubs if p.port.proto == "udp"}
        if ports:
            with kernel_errors("flushing UDP conntrack entries"):
                k.forget_udp(self.host, ports)

    def _move_default_routes(self, removed: list[Endpoint]) -> list[Endpoint]:
        """Like Docker: a namespace losing its gateway network gets the default
        route of another network it is still on."""
        gone = {e.id for e in removed}
        moved = []
        for ep in removed:
            if not ep.default_route:
                continue
            rest = [e for e in self.store.endpoints_of_netns(ep.netns) if e.id not in gone]
            if not rest or not k.is_netns_mount(self.ns_path(ep.netns)):
                continue
            ns = self.open_ns(ep.netns)
            try:
                with kernel_errors(f"moving the default route of {ep.netns!r}"), \
                        k.open_rtnl(ns) as rt:
                    rt.batch([k.req_add_route("default", rest[0].gateway)])
            finally:
                ns.close()
            moved.append(rest[0])
        return moved

    def _delete_host_ends(self, eps: list[Endpoint]) -> None:
        """Delete host veth ends nsnet owns (their peers go with them), all in
        one RTM_DELLINK: the kernel pays one RCU grace period, not one per link."""
        if not eps:
            return
        links = self.rtnl.links_named([e.host_ifname for e in eps])  # not a dump of all
        ours = [links[e.host_ifname] for e in eps
                if e.host_ifname in links and links[e.host_ifname].alias == veth_alias(e.id)]
        self._delete_links([lk.name for lk in ours])

    def _delete_links(self, names: list[str]) -> None:
        """One RTM_DELLINK for all: move them to a transient group, delete it."""
        if not names:
            return
        with kernel_errors("deleting veth pairs"):
            if len(names) == 1:
                self.rtnl.run([k.req_del_link(name=names[0])])
                return
            group = _transient_group()
            self.rtnl.batch([k.req_set_link(name, group=group) for name in names])
            err, detail = self.rtnl.batch([k.req_del_group(group)]).errors[0]
            if err and err != errno.ENODEV:  # ENODEV: all were gone already
                raise k.NetlinkError(err, "delete veth pairs", detail)

    # ------------------------------------------------------ reconcile / gc
    def reconcile(self, dry_run: bool = False) -> list[Action]:
        """Make the kernel match the state store (see :mod:`nsnet.reconcile`)."""
        return self._plan_and_apply(plan_reconcile, dry_run)

    def gc(self, dry_run: bool = False) -> list[Action]:
        """Remove nsnet-marked objects that no record claims."""
        return self._plan_and_apply(plan_gc, dry_run)

    def _plan_and_apply(self, planner: Callable[[Engine], list[Action]],
                        dry_run: bool) -> list[Action]:
        with self.lock:
            done = [] if dry_run else self._recovered_actions()
            actions = planner(self)
            if not dry_run and actions:
                self._apply_actions(actions)
        return done + actions

    def _recovered_actions(self) -> list[Action]:
        done, self._recovered = self._recovered + self.recover(), []
        return [Action("interrupted", "journal", what) for what in done]

    def _apply_actions(self, actions: list[Action]) -> None:
        kinds = {a.kind for a in actions}
        if "orphan" in kinds:
            self._delete_links([a.data[0] for a in actions if a.kind == "orphan"])
        resolv = {n for a in actions if a.kind == "dns" for n in a.data}
        if "release" in kinds:
            released = {a.data[0] for a in actions if a.kind == "release"}
            resolv |= {e.netns for e in self.store.endpoints_by_id(released)}
            with self.store.transaction():
                self.store.remove_endpoints(released)
                self._forget_idle_handoffs()
        for a in actions:
            if a.kind == "netns" and not k.is_netns_mount(self.ns_path(a.data[0])):
                self._remove_if_empty(a.data[0])  # a stale empty mount point
                with kernel_errors(f"recreating namespace {a.data[0]!r}"):
                    k.ensure_netns_dir(self.netns_dir)
                    k.create_netns(self.netns_dir, a.data[0], {_IPV6_DEFAULT_OFF: "1"}).close()
        for a in actions:
            if a.kind == "bridge":
                self._repair_bridge(self.network(a.data[0]))
        by_net: dict[str, set[str]] = {}
        for a in actions:
            if a.kind == "endpoint":
                by_net.setdefault(a.data[0], set()).add(a.data[1])
        for net_name, ids in by_net.items():
            self._recreate_endpoints(self.network(net_name), ids)
        if "sysctl" in kinds:
            self._ensure_forwarding()
        if "dns" in kinds or "release" in kinds:  # a released namespace loses its resolv.conf
            self._sync_dns(resolv)
        if "firewall" in kinds or "release" in kinds:
            self._sync_firewall()

    def _repair_bridge(self, net: Network) -> None:
        link = self.rtnl.find_link(net.bridge)
        if link is None:
            self._create_bridge(net)
            return
        with kernel_errors(f"repairing bridge {net.bridge}"):
            self._guard_loopback(link.index)
            k.write_sysctls(self.host, bridge_sysctls(net))
            self.rtnl.batch([k.req_add_addr(link.index, f"{net.gateway}/{net.prefixlen}")])
            self.rtnl.run([k.req_set_link(index=link.index, up=True)])

    def _recreate_endpoints(self, net: Network, ids: set[str]) -> None:
        eps = [e for e in net.endpoints if e.id in ids]
        self._delete_host_ends(eps)  # a half-broken pair goes first
        plan = _Plan(net, eps, set(), set())
        bridge = self._bridge_index(net)
        for start in range(0, len(eps), CHUNK):
            self._connect_chunk(plan, bridge, eps[start : start + CHUNK])

    # ---------------------------------------------------------------- probes
    def ping(self, netns: str, address: str, count: int = 4, interval: float = 1.0,
             timeout: float = 1.0) -> Iterator[k.Echo]:
        ip = parse_ip(address)
        if ip.version != 4:
            raise InvalidInput("only IPv4 ping is supported for now")
        if count < 1:
            raise InvalidInput("count must be at least 1")
        ns = self.open_ns(netns)
        try:
            with kernel_errors(f"ping from {netns!r}"):
                yield from k.ping(ns.fd, str(ip), count, interval, timeout)
        finally:
            ns.close()

    def check(self, network: str | None = None, timeout: float = 1.0) -> list[CheckResult]:
        nets = [self.network(network)] if network else self.networks()
        return [self._check_network(net, timeout) for net in nets]

    def _check_network(self, net: Network, timeout: float) -> CheckResult:
        reach: dict[tuple[str, str], bool] = {}
        handed = self.handed_off()  # probed from the inside only by their manager
        mine = [e for e in net.endpoints if e.netns not in handed]
        tidy = len(mine) > NEIGH_TIDY_ABOVE
        for src in mine:
            targets = [e for e in mine if e is not src]
            ns = self.open_ns(src.netns)
            try:
                with kernel_errors(f"probing from {src.netns!r}"):
                    ok = k.reachable(ns.fd, [e.ip for e in targets], timeout)
            finally:
                ns.close()
            for dst in targets:
                reach[(src.netns, dst.netns)] = ok[dst.ip]
            if tidy:
                self._forget_neighbours(src, targets)
        return CheckResult(net.name, tuple(e.netns for e in mine), reach)

    def _forget_neighbours(self, src: Endpoint, targets: list[Endpoint]) -> None:
        """Drop the ARP entries one row of probes created, on both sides --
        dynamic ones only: an entry someone made PERMANENT (or NOARP) is theirs.

        The kernel's ARP table is shared by all namespaces and holds at most
        gc_thresh3 (1024) dynamic entries, settable only in the root
        namespace: a full matrix over N endpoints would need N*(N-1)."""
        pairs = [(src, [t.ip for t in targets])] + [(t, [src.ip]) for t in targets]
        for ep, ips in pairs:
            ns = self.open_ns(ep.netns)
            try:
                with k.open_rtnl(ns) as rt:
                    index = rt.link(ep.ifname).index
                    kept = rt.static_neighbours(index)
                    rt.batch([k.req_del_neigh(index, ip) for ip in ips if ip not in kept])
            except OSError:
                pass  # best effort: the probe result stands either way
            finally:
                ns.close()


def _no_ipv6(ifname: str) -> str:
    # IPv4-only networks: no IPv6 autoconfiguration traffic flooding the bridge.
    # Only the namespace side matters: a bridge port's own packets go to its
    # peer, never through the bridge.
    return f"net/ipv6/conf/{ifname}/disable_ipv6"


_IPV6_DEFAULT_OFF = "net/ipv6/conf/default/disable_ipv6"
_IP_FORWARD = "net/ipv4/ip_forward"


def bridge_sysctls(net: Network) -> dict[str, str]:
    values = {_no_ipv6(net.bridge): "1"}
    if not net.internal:
        # The host's own 127.0.0.1 reaches published ports by DNAT to the
        # bridge: the kernel must route a loopback source out of it (then
        # SNATed).  Chosen over a userland proxy: no process or socket per
        # port, kernel speed; the firewall's guard chain drops 127.0.0.0/8
        # arriving *from* the bridge (CVE-2020-8558), and so does the bridge's
        # tc loopback guard, which survives an `nft flush ruleset`.
        values[f"net/ipv4/conf/{net.bridge}/route_localnet"] = "1"
    return values


def _diverts(m: PortMap, lst: k.Listener, gateways: set[str]) -> bool:
    """Whether mapping ``m`` would take the traffic of host listener ``lst``
    (same protocol and port already matched)."""
    addr = lst.address.removeprefix("::ffff:")
    if ":" in addr and addr != "::":
        return False  # an IPv6 address: nsnet's DNAT is IPv4 only
    if addr in gateways:
        return False  # nsnet's DNS: traffic to a gateway is never DNATed
    return not m.host_ip or addr in ("0.0.0.0", "::") or addr == m.host_ip


def _configure_inside(ns: k.Netns, ep: Endpoint, ipv6_off: bool) -> None:
    """Inside one namespace: IPv6 off on the new interface (unless it was
    born so), then one batch: lo up, interface up, address, default route."""
    with k.entered(ns.fd):
        if not ipv6_off:
            k.write_sysctls_here({_no_ipv6(ep.ifname): "1"})
        rtnl = k.Rtnl()
    with rtnl as rt:
        index = rt.link(ep.ifname).index
        reqs = [k.req_set_link("lo", up=True), k.req_set_link(index=index, up=True),
                k.req_add_addr(index, ep.address)]
        if ep.default_route:
            reqs.append(k.req_add_route("default", ep.gateway, oif=index))
        rt.run(reqs)


def _aux_addresses(pool: Pool, aux: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Docker's --aux-address NAME=IP: inside the subnet, not the gateway,
    each name and address once; IPAM never hands them out."""
    out: dict[str, str] = {}
    for name, text in aux:
        if not name:
            raise InvalidInput(f"--aux-address ={text}: the name is empty (NAME=IP)")
        ip = parse_ip(text, f"--aux-address {name}")
        pool._check_in_subnet(ip, f"--aux-address {name}")
        if ip == pool.gateway:
            raise InvalidInput(f"--aux-address {name}={ip} is the gateway")
        if name in out or str(ip) in out.values():
            raise InvalidInput(f"--aux-address {name}={ip}: name or address given twice")
        out[name] = str(ip)
    return tuple(out.items())


def _labels(labels: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for key, value in labels:
        if not key or any(c.isspace() or not c.isprintable() for c in key):
            raise InvalidInput(f"label key {key!r} must be non-empty, without spaces or "
                               "control characters")
        out[key] = value  # the last one wins, as Docker's
    return tuple(out.items())


def _refusal(bad: list[str], one: str, many: str, names: list[str], verb: str,
             kind: str = "namespace") -> str:
    """The rule of every bulk command: all or nothing.  The error names every
    offender, and, for a bulk request, says that nothing was done."""
    quoted = ", ".join(repr(n) for n in bad)
    text = f"{kind} {quoted} {one}" if len(bad) == 1 else f"{kind}s {quoted} {many}"
    if len(names) > 1:
        rest = [n for n in names if n not in bad]
        text += f"; nothing was {verb}" + (
            f" ({', '.join(repr(n) for n in rest)} left as they were: all or nothing)"
            if rest else "")
    return text


def _match_ephemeral(ports: tuple[PortMap, ...],
                     held: dict[PortMap, Published]) -> tuple[PortMap, ...]:
    """``port rm NET NS 80``: a host port 0 names every mapping of that port."""
    out: list[PortMap] = []
    for m in ports:
        if m.host_port:
            out.append(m)
            continue
        same = [h for h in held if (h.proto, h.host_ip, h.port) == (m.proto, m.host_ip, m.port)]
        out += same or [m]
    return tuple(out)


def check_ok(results: list[CheckResult]) -> None:
    bad = [f"{r.network}: {a} -> {b}" for r in results for a, b in r.failed]
    if bad:
        raise CheckFailed(f"{len(bad)} pair(s) unreachable: " + ", ".join(bad[:5]))

