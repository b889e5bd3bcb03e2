"""The overlay network driver (#17): one network spanning the hosts of a cluster.

On every host that uses it, an overlay network is what a bridge network is
-- a Linux bridge holding the gateway address, with the same firewall,
published ports and egress NAT through the local host (the
:class:`~nsnet.engine.networks.BridgeDriver` makes that part) -- plus a
VXLAN device (the network's VNI, learning off, ARP proxy) enslaved to the
bridge.  What hosts must agree on lives in etcd (:mod:`nsnet.cluster`):
the network and its VNI, address blocks, one record per endpoint.

The order of a connect (the facade composes it, journal first):

1. plan: addresses from this host's blocks (:class:`~nsnet.cluster.alloc.
   BlockAllocator`: a store round trip only to read the host's blocks or
   claim a new one -- and a store without quorum refuses here, before
   anything is journaled or made);
2. journal the intent, make the veths (as on a bridge network);
3. publish the endpoint records on the host's liveness lease, last: a
   failure rolls the kernel back, and the rollback withdraws whatever of
   the records did reach the store;
4. after the commit: program this host's FDB/neighbour entries from the
   records of the other hosts (the agent keeps them so afterwards).

Disconnect withdraws the records first (remote hosts stop sending), then
removes the kernel objects.  The agent (``nsnet cluster agent``,
:meth:`OverlayDriver.run_agent`) renews the host's lease, republishes its
records after an expiry, and watches each local overlay network's records
to keep the VXLAN device's entries equal to them.

Endpoint MACs are derived from their address (02:42 + the IPv4 address, as
Docker does): addresses are unique in the cluster, so MACs are too, and a
host's FDB entry never points at two VTEPs.

Each host's bridge holds the network's gateway address (a distributed
gateway, as Calico's): an endpoint's traffic leaves through its own host.

IPv6 (#16): dual-stack and IPv6-only overlays are what bridge networks of
those kinds are (the bridge driver makes the v6 gateway, sysctls and
firewall rules: NAT or routed egress, isolation, --internal), with the v6
subnet the cluster's: ``--ipv6`` without a subnet takes the cluster's when
the network exists there, else picks a /64 of this host's unique-local
pool avoiding every overlay's of the cluster, and the record made in etcd
then fixes it for every host.  Addresses come from v6 blocks of the
cluster (:mod:`nsnet.cluster.alloc`: /120s of the subnet's first /96);
an IPv6-only endpoint's MAC is 02:42 + the low 32 bits of its address,
unique in the network because of that /96.  The records carry both
addresses and every host programs a neighbour entry per address; the
VXLAN device's ``proxy`` answers NDP from them as it does ARP.  The
underlay stays IPv4 (the VTEPs, etcd, the advertised address).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterable

from .. import kernel as k
from ..crash import crashpoint
from ..errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    NsnetError,
    StoreUnavailable,
)
from ..model import Endpoint, Network, NetworkSpec, bridge_alias
from .context import Context, kernel_errors

__all__ = ["OverlayDriver", "overlay_mac", "vxlan_name"]

OPTIONS = ("internal", "icc", "masquerade", "dns")
CLUSTER_FILE = "cluster.json"  # nsnet.cluster.membership.CONFIG_FILE, in the state directory


def vxlan_name(net: Network | str) -> str:
    """The VXLAN device of a network on this host: ``vx-`` + 12 of its id."""
    net_id = net if isinstance(net, str) else net.id
    return f"vx-{net_id[:12]}"


def overlay_mac(ip: str) -> str:
    """02:42 + the IPv4 address, or + the low 32 bits of an IPv6 address
    (pure): unique within the network (IPv6: the cluster hands out v6
    addresses differing in their low 32 bits, see nsnet.cluster.alloc; two
    IPv6-only networks reuse MACs, harmless: FDB and neighbour tables are
    per VXLAN device)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip).packed[-4:])


class _Cluster:
    """This host's membership (STATE_DIR/cluster.json) and a store client,
    opened on first use."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._config = None
        self._store = None
        self.round_trips = 0  # store requests made by this process (bench)

    @property
    def config(self):
        from ..cluster.membership import ClusterConfig

        if self._config is None:
            try:
                self._config = ClusterConfig.load(self.ctx.store.state_dir)
            except NotFound:
                raise NotFound("overlay networks need this host to join a cluster first "
                               "(nsnet cluster join --store etcd://... --advertise IP)") from None
        return self._config

    def joined(self) -> bool:
        # no membership file: not joined, learnt without importing the
        # cluster code (~15 ms of `network ls` on a host of no cluster)
        if self._config is None and not os.path.exists(
                os.path.join(self.ctx.store.state_dir, CLUSTER_FILE)):
            return False
        try:
            return bool(self.config)
        except NotFound:
            return False

    @property
    def store(self):
        if self._store is None:
            from ..cluster.api import _open

            self._store = _Counting(_open(self.config, self.ctx.host_netns, self.ctx.netns_dir,
                                          self.ctx.store_timeout),
                                    self)
        return self._store

    def reload(self) -> None:
        """Read cluster.json again (the agent may have renewed the lease)."""
        self._config = None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class _Counting:
    """A store that counts the requests it forwards (the bench reports
    etcd round trips per endpoint)."""

    def __init__(self, inner, owner: _Cluster) -> None:
        self._inner, self._owner = inner, owner

    def __getattr__(self, name: str):
        value = getattr(self._inner, name)
        if name in ("get", "get_prefix", "put", "delete", "txn", "lease_grant",
                    "lease_keepalive", "lease_revoke"):
            def counted(*args, **kwargs):
                self._owner.round_trips += 1
                return value(*args, **kwargs)
            return counted
        return value


class OverlayDriver:
    """The NetworkDriver of ``driver="overlay"`` networks; the bridge part
    is delegated to the bridge driver given."""

    def __init__(self, ctx: Context, bridge, fact: Callable) -> None:
        # the bridge driver and networks.DriverFact, handed in by the facade
        # (a resource imports no other resource)
        self.ctx = ctx
        self.bridge = bridge
        self.fact = fact
        self.cluster = _Cluster(ctx)

    def close(self) -> None:
        self.cluster.close()

    # ------------------------------------------------------- cluster view
    def cluster_network(self, name: str):
        from ..cluster import alloc

        return alloc.get_network(self.cluster.store, name)

    def spec_of(self, name: str) -> NetworkSpec | None:
        """The spec that makes the cluster's overlay network ``name`` on this
        host, or None when this host joined no cluster or it has none such."""
        if not self.cluster.joined():
            return None
        try:
            on = self.cluster_network(name)
        except NotFound:
            return None
        opts = dict(on.options)
        return NetworkSpec(name, str(on.subnet) if on.subnet else None,
                           masquerade=bool(opts.get("masquerade", True)),
                           internal=bool(opts.get("internal", False)),
                           icc=bool(opts.get("icc", True)), dns=bool(opts.get("dns", True)),
                           driver="overlay", ipv6=on.subnet6 is not None,
                           subnet6=str(on.subnet6) if on.subnet6 else None,
                           ipv4=on.subnet is not None)

    def with_cluster_subnet6(self, spec: NetworkSpec) -> NetworkSpec:
        """``--ipv6`` without a v6 subnet on an overlay: the cluster's v6
        subnet when the cluster has the network (this host joins it with
        the same subnets), else the spec unchanged (the ULA pool picks)."""
        if not self.cluster.joined():
            return spec
        try:
            on = self.cluster_network(spec.name)
        except NotFound:
            return spec
        return dataclasses.replace(spec, subnet6=str(on.subnet6)) if on.subnet6 else spec

    def taken6(self) -> list[str]:
        """The cluster's overlays' v6 subnets (a ULA pick avoids them)."""
        return [str(n.subnet6) for n in self.cluster_networks() if n.subnet6]

    def records(self, name: str) -> list:
        """Every endpoint record of network ``name`` (all hosts)."""
        from ..cluster.keys import Keys
        from ..cluster.registry import EndpointRecord

        keys = Keys(self.cluster.config.root)
        kvs, _ = self.cluster.store.get_prefix(keys.endpoints(name))
        return [EndpointRecord.from_kv(keys, kv) for kv in kvs]

    def cluster_networks(self) -> list:
        if not self.cluster.joined():
            return []
        from ..cluster import alloc
        from ..cluster.keys import Keys

        keys = Keys(self.cluster.config.root)
        kvs, _ = self.cluster.store.get_prefix(keys.networks())
        return [alloc.OverlayNetwork.from_kv(keys.last(kv.key), kv) for kv in kvs]

    def view(self, name: str) -> dict:
        """The cluster-wide view of one overlay network: VNI, and which host
        holds which endpoint."""
        on = self.cluster_network(name)
        recs = sorted(self.records(name), key=lambda r: (r.host, r.ips))
        v6 = {"subnet6": str(on.subnet6), "block6": on.block6} if on.subnet6 else {}
        return {"vni": on.vni, "subnet": str(on.subnet or ""), "block": on.block, **v6,
                "store": self.cluster.store.name, "host": self.cluster.config.host,
                "endpoints": [{"host": r.host, "endpoint": r.name, "ip": r.ip, "ip6": r.ip6,
                               "mac": r.mac, "vtep": r.vtep} for r in recs]}

    def locate(self, net: Network, ip: str) -> dict:
        """Where the cluster puts ``ip`` of overlay ``net`` (doctor): the
        host whose block holds it, whether that host is alive, its record,
        and whether this host's VXLAN device has the FDB entry for it."""
        from ..cluster.keys import Keys
        from ..kernel.vxlan import fdb_entries

        cfg = self.cluster.config
        keys = Keys(cfg.root)
        on = self.cluster_network(net.name)
        addr = ipaddress.ip_address(ip)
        block = ipaddress.ip_network(f"{addr}/{on.block_of(addr.version)}", strict=False)
        owner = self.cluster.store.get(keys.block(net.name, block))
        host = owner.json()["host"] if owner else ""
        alive = bool(host) and self.cluster.store.get(keys.alive(host)) is not None
        record = next((r for r in self.records(net.name)
                       if str(addr) in {str(ipaddress.ip_address(a)) for a in r.ips}), None)
        link = self.ctx.rtnl.find_link(vxlan_name(net))
        fdb = bool(record and link and any(
            e.mac == record.mac and e.dst == record.vtep
            for e in fdb_entries(self.ctx.rtnl, link.index)))
        return {"host": host, "alive": alive, "self": cfg.host, "vxlan": vxlan_name(net),
                "record": None if record is None else {"mac": record.mac, "vtep": record.vtep},
                "fdb": fdb}

    # ------------------------------------------------------------ driver
    def prepare(self, net: Network) -> Network:
        """What only this host knows: the overlay MTU, from the underlay
        device holding the advertised address (minus VXLAN's 50 bytes)."""
        from ..kernel.vxlan import overlay_mtu

        if net.aux_addresses or net.ip_range != net.subnet or net.ip_range6 != net.subnet6:
            raise InvalidInput("--aux-address and --ip-range do not apply to overlay networks "
                               "(addresses come from the cluster's blocks)")
        if net.ipv6_mode != "nat":
            # inbound to an endpoint's own address could enter through any
            # host (each holds the gateway) and its reply leave through
            # another: not made, nor tested, for overlays
            raise InvalidInput(f"--ipv6-mode {net.ipv6_mode} does not apply to overlay "
                               "networks (IPv6 egress is NAT through the local host)")
        for subnet, gateway in ((net.subnet, net.gateway), (net.subnet6, net.gateway6)):
            # every host's bridge holds the gateway: the cluster keeps the
            # subnet's first address out of every block for it
            if subnet and ipaddress.ip_address(gateway) != ipaddress.ip_network(subnet)[1]:
                raise InvalidInput(f"--gateway {gateway}: an overlay's gateway is its "
                                   f"subnet's first address ({ipaddress.ip_network(subnet)[1]})")
        mtu = overlay_mtu(self._underlay().mtu)
        if net.mtu != 1500 and net.mtu > mtu:  # 1500: the default, not a user's choice
            raise InvalidInput(f"--mtu {net.mtu}: an overlay on this underlay carries at "
                               f"most {mtu}")
        return dataclasses.replace(net, mtu=min(net.mtu, mtu) if net.mtu != 1500 else mtu)

    def _underlay(self) -> k.Link:
        advertise = self.cluster.config.advertise
        rtnl = self.ctx.rtnl
        for addr in rtnl.addresses():
            if addr.address == advertise:
                link = rtnl.find_link(index=addr.index)
                if link is not None:
                    return link
        raise NotFound(f"no interface of the host holds the advertised underlay address "
                       f"{advertise} (nsnet cluster join --advertise)")

    def validate(self, net: Network) -> None:
        self.bridge.validate(net)
        if self.ctx.rtnl.find_link(vxlan_name(net)):
            raise AlreadyExists(f"a link named {vxlan_name(net)!r} already exists")
        try:
            on = self.cluster_network(net.name)
        except NotFound:
            return
        self._check_same_subnets(net, on)

    def _check_same_subnets(self, net: Network, on) -> None:
        """This host joins the cluster's network ``on`` only with its very
        subnets (both families)."""
        theirs = tuple(str(s) if s else "" for s in (on.subnet, on.subnet6))
        if theirs != (net.subnet, net.subnet6):
            raise AlreadyExists(f"overlay network {net.name!r} exists in cluster "
                                f"{self.cluster.store.name} with subnet "
                                f"{' and '.join(s for s in theirs if s)}")

    def setup(self, net: Network) -> None:
        """The cluster's network (made here if new: a VNI by transaction,
        the record naming ``net.id`` as its creator), then the bridge, then
        the VXLAN device on it.  The caller's journaled intent undoes all of
        it, the cluster's network included (:meth:`forget_made`), on an
        error or after a crash."""
        from ..cluster import alloc

        try:
            on = self.cluster_network(net.name)
            # made by another host since validate() (the same `create` run on
            # two hosts at once): join it only with the same subnets -- with
            # --ipv6 and no subnet each host picked a /64 of its own pool
            self._check_same_subnets(net, on)
        except NotFound:
            opts = {o: getattr(net, o) for o in OPTIONS}
            try:
                on = alloc.create_network(self.cluster.store, net.name, net.subnet or None,
                                          options=opts, creator=net.id,
                                          subnet6=net.subnet6 or None)
            except AlreadyExists:  # lost the race to make it: the same rule
                self._check_same_subnets(net, self.cluster_network(net.name))
                on = self.cluster_network(net.name)
        crashpoint("overlay:cluster-network")
        self.bridge.setup(net)
        self._make_vxlan(net, on.vni)
        crashpoint("overlay:vxlan")

    def forget_made(self, name: str, net_id: str) -> None:
        """Undo a create's cluster part: the cluster's network ``name`` goes
        if the create of local network ``net_id`` made it and no host has an
        endpoint on it yet (one made by another host, or in use, stays).  A
        store out of reach raises: the intent stays journaled, and the next
        command tries again."""
        from ..cluster import alloc

        if not name or not self.cluster.joined():
            return
        with contextlib.suppress(NotFound, Conflict):
            alloc.delete_network(self.cluster.store, name, creator=net_id)

    def _make_vxlan(self, net: Network, vni: int) -> int:
        from ..kernel.vxlan import VxlanSpec, req_new_vxlan

        rt = self.ctx.rtnl
        with kernel_errors(f"creating VXLAN device {vxlan_name(net)}"):
            br = rt.link(net.bridge).index
            spec = VxlanSpec(vxlan_name(net), vni, self.cluster.config.advertise,
                             self._underlay().index, mtu=net.mtu, master=br)
            rt.run([req_new_vxlan(spec)])
            index = rt.link(vxlan_name(net)).index
            self._ipv6_on_vxlan(net)  # while down: no link-local address is ever made
            rt.run([k.req_set_link(index=index, up=True, alias=bridge_alias(net.id))])
        return index

    def _ipv6_on_vxlan(self, net: Network) -> None:
        """IPv6 networks: the VXLAN device holds the remote endpoints' v6
        neighbour entries (the kernel refuses them while IPv6 is disabled on
        it, and ``proxy`` answers NDP from them), quiet as a bridge port: no
        link-local address, no RA, no DAD."""
        if net.has_ipv6:
            k.write_sysctls(self.ctx.host, k.ipv6_interface_sysctls(vxlan_name(net)))

    def teardown(self, net_id: str, device: str, unmarked_too: bool = False) -> None:
        """The VXLAN device (marked as the bridge is), the bridge; and the
        cluster's network when no host has an endpoint on it any more."""
        net = self.ctx.store.network_by_id(net_id)
        link = self.ctx.rtnl.find_link(vxlan_name(net_id))
        marks = {bridge_alias(net_id)} | ({""} if unmarked_too else set())
        if link and link.kind == "vxlan" and link.alias in marks:
            with kernel_errors(f"deleting VXLAN device {link.name}"):
                self.ctx.rtnl.run([k.req_del_link(index=link.index)])
        self.bridge.teardown(net_id, device, unmarked_too)
        if net is not None and net.driver == "overlay":
            self._forget_if_unused(net.name)

    def delete_cluster_network(self, name: str) -> None:
        """Remove the cluster's overlay network ``name`` (its VNI, every
        host's blocks); refused while any host has an endpoint on it."""
        from ..cluster import alloc

        alloc.delete_network(self.cluster.store, name)

    def _forget_if_unused(self, name: str) -> None:
        """The last host out removes the cluster's network; while another
        host has endpoints on it, it stays and this host gives its address
        blocks back (it has no endpoint of it left).  A store out of reach
        raises: the deletion is journaled and the next command finishes it,
        so the cluster never keeps what no host's records justify."""
        from ..cluster import alloc

        try:
            alloc.delete_network(self.cluster.store, name)
        except NotFound:
            return
        except Conflict:  # (the same key root as the claims: BlockAllocator's)
            alloc.release_host_blocks(self.cluster.store, name, self.cluster.config.host)

    def attach_index(self, net: Network) -> int:
        return self.bridge.attach_index(net)

    def repair(self, net: Network) -> None:
        """Bridge, VXLAN device, this host's records in the store, and the
        FDB/neighbour entries: all as the cluster says."""
        self.bridge.repair(net)
        on = self.cluster_network(net.name)
        link = self.ctx.rtnl.find_link(vxlan_name(net))
        if link is None:
            self._make_vxlan(net, on.vni)
        else:
            self._ipv6_on_vxlan(net)  # (its sysctls may have been reset by hand)
            if not link.up:
                self.ctx.rtnl.run([k.req_set_link(index=link.index, up=True)])
        self.republish(net)
        self.sync(net)

    def facts(self, net: Network, links: dict[str, k.Link]):
        fact = self.fact
        out = list(self.bridge.facts(net, links))
        vx = links.get(vxlan_name(net))
        if vx is None or not vx.up:
            out.append(fact(vxlan_name(net), f"VXLAN device of overlay network "
                            f"{net.name!r} missing or down: recreate", True))
            return out
        try:
            self.cluster_network(net.name)
            why = self._drift(net, vx.index)
        except NotFound:
            why, repair = (f"overlay network {net.name!r} is gone from the cluster: "
                           "nsnet network rm it here"), False
        except StoreUnavailable as exc:
            why, repair = (f"cannot compare overlay network {net.name!r} with the "
                           f"cluster: {exc}"), False
        else:
            repair = True
        if why:
            out.append(fact(net.name, why, repair))
        return out

    def _drift(self, net: Network, vx_index: int) -> str:
        """How this host differs from the cluster: its own records (missing,
        or orphans of a rolled-back connect) and its FDB/neighbour entries."""
        from ..cluster.registry import desired_entries
        from ..kernel.vxlan import fdb_entries, permanent_neighbours

        cfg = self.cluster.config
        recs = self.records(net.name)
        mine = {r.name: r for r in recs if r.host == cfg.host}
        want = {e.id for e in self.ctx.store.endpoints("e.network_id=?", (net.id,))}
        if set(mine) != want:
            return (f"records of this host in the cluster differ from its endpoints "
                    f"({len(set(mine) - want)} extra, {len(want - set(mine))} missing): "
                    "republish")
        desired = desired_entries(recs, cfg.host, cfg.advertise)
        fdb = {(e.mac, e.dst) for e in fdb_entries(self.ctx.rtnl, vx_index)}
        if fdb != set(desired.fdb) or permanent_neighbours(self.ctx.rtnl, vx_index) != set(
                desired.neigh):
            return "FDB/neighbour entries differ from the cluster's endpoints: reprogram"
        return ""

    # --------------------------------------------------------- endpoints
    def assign(self, net: Network, eps: list[Endpoint], static_ip: str | None,
               static_mac: str | None, static_ip6: str | None = None) -> list[Endpoint]:
        """The endpoints with addresses of each family the network has, from
        this host's blocks (claiming a block by transaction when they are
        full), and MACs from the addresses (the IPv4 one if there is one).
        A static ``--ip``/``--ip6`` (one endpoint) must lie in a block this
        host holds or claims now by transaction; another host's block
        refuses it."""
        from ..cluster.alloc import BlockAllocator

        if static_mac:
            raise InvalidInput("--mac does not apply to overlay networks (an endpoint's MAC "
                               "is derived from its address: unique in the cluster)")
        cfg = self.cluster.config
        on = self.cluster_network(net.name)
        allocator = BlockAllocator(self.cluster.store, on, cfg.host)
        used = {ipaddress.ip_address(ip) for ip in self.ctx.store.used_addresses(net.id)}
        out = []
        for ep in eps:
            ip = self._address(net, on, allocator, used, 4, static_ip) if net.has_ipv4 else None
            ip6 = (self._address(net, on, allocator, used, 6, static_ip6) if net.has_ipv6
                   else None)
            out.append(dataclasses.replace(
                ep, address=f"{ip}/{net.prefixlen}" if ip else "",
                address6=f"{ip6}/{net.prefixlen6}" if ip6 else "",
                mac=overlay_mac(str(ip if ip is not None else ip6))))
        return out

    def _address(self, net: Network, on, allocator, used: set, version: int,
                 static: str | None):
        """One address of family ``version``: the static one, claimed, or
        the next of this host's blocks; noted in ``used``."""
        from ..cluster.alloc import claim_address

        if static:
            ip = ipaddress.ip_address(static)
            if ip in used:
                flag = "--ip" if version == 4 else "--ip6"
                raise AlreadyExists(f"{flag} {ip} is in use on network {net.name!r}")
            claim_address(self.cluster.store, on, self.cluster.config.host, ip)
        else:
            ip = allocator.allocate(used, version)
        used.add(ip)
        return ip

    def _record(self, net: Network, ep: Endpoint):
        from ..cluster.registry import EndpointRecord

        cfg = self.cluster.config
        return EndpointRecord(net.name, cfg.host, ep.id, ep.ip, ep.mac, cfg.advertise,
                              (ep.netns, *ep.aliases) if net.dns else (), ep.ip6)

    def publish(self, net: Network, eps: list[Endpoint]) -> None:
        """The endpoints' records, on the host's liveness lease (renewed or
        re-made here if it lapsed: no agent ran for a while)."""
        from ..cluster import membership, registry
        from ..cluster.keys import Keys

        cfg = self.cluster.config
        recs = [self._record(net, e) for e in eps]
        try:
            registry.publish_many(self.cluster.store, recs, cfg.lease, Keys(cfg.root))
            return
        except NotFound:  # the lease expired: the agent may have registered again
            self.cluster.reload()
        cfg = self.cluster.config
        try:
            registry.publish_many(self.cluster.store, recs, cfg.lease, Keys(cfg.root))
            return
        except NotFound:  # no agent (or a stalled one): register again here
            pass
        try:
            lease, _ = membership.renew(self.cluster.store, cfg.host, cfg.lease, cfg.advertise,
                                        Keys(cfg.root))
        except Conflict:  # the agent did, this very moment: its lease is on disk
            self.cluster.reload()
            lease = self.cluster.config.lease
        else:
            cfg.lease = lease
            cfg.save(self.ctx.store.state_dir)
        registry.publish_many(self.cluster.store, recs, lease, Keys(cfg.root))

    def withdraw(self, network: str, ids: Iterable[str]) -> None:
        """Remove this host's records of ``ids`` (one transaction per 64)."""
        from ..cluster.keys import Keys
        from ..cluster.store import Delete

        cfg = self.cluster.config
        keys = Keys(cfg.root)
        ids = list(ids)
        for i in range(0, len(ids), 64):
            self.cluster.store.txn([], [Delete(keys.endpoint(network, cfg.host, ep_id))
                                        for ep_id in ids[i:i + 64]])

    def withdraw_anywhere(self, ids: Iterable[str], notify: Callable[[str], None]) -> None:
        """A rollback's part: records of ``ids`` on any local overlay network,
        best effort (a store out of reach: reconcile removes them later)."""
        ids = list(ids)
        nets = [n for n in self.ctx.store.networks(with_endpoints=False)
                if n.driver == "overlay"]
        if not ids or not nets or not self.cluster.joined():
            return
        try:
            for net in nets:
                self.withdraw(net.name, ids)
        except StoreUnavailable as exc:
            notify(f"nsnet: could not withdraw the endpoint records of a rolled-back "
                   f"connect ({exc}); nsnet reconcile removes them once the store answers")

    def republish(self, net: Network) -> None:
        """This host's records = its endpoints (extra ones withdrawn)."""
        cfg = self.cluster.config
        eps = self.ctx.store.endpoints("e.network_id=?", (net.id,))
        have = {r.name for r in self.records(net.name) if r.host == cfg.host}
        self.withdraw(net.name, have - {e.id for e in eps})
        self.publish(net, eps)

    def sync(self, net: Network) -> list[str]:
        """Program the VXLAN device from the records of the other hosts."""
        from ..cluster.registry import VxlanApplier, desired_entries

        cfg = self.cluster.config
        link = self.ctx.rtnl.find_link(vxlan_name(net))
        if link is None:
            raise NotFound(f"VXLAN device {vxlan_name(net)!r} of overlay network "
                           f"{net.name!r} is missing (nsnet reconcile)")
        # the kernel first, then the records: the agent programs the device
        # meanwhile, and an entry it added from a record newer than ours
        # would otherwise look like one nobody wants -- deleted here, while
        # the agent believes it programmed (CI: a host's endpoint unreachable
        # from another until the next change).  Read in this order, what the
        # agent adds in between is only appended again (EEXIST: fine).
        with kernel_errors(f"reading {vxlan_name(net)}"):
            applier = VxlanApplier(self.ctx.rtnl, link.index).sync_from_kernel()
        records = self.records(net.name)
        desired = desired_entries(records, cfg.host, cfg.advertise)
        self.store_names(net, records)
        with kernel_errors(f"programming {vxlan_name(net)}"):
            return applier.apply(desired)

    def sync_after_commit(self, net: Network) -> None:
        """:meth:`sync` once a connect committed: a store or kernel error now
        is a notice, not the command's failure (the agent, or reconcile,
        programs the entries later)."""
        try:
            for failure in self.sync(net):
                self.ctx.notify(f"nsnet: programming {vxlan_name(net)}: {failure}")
        except NsnetError as exc:
            self.ctx.notify(f"nsnet: connected; the entries for other hosts' endpoints are "
                            f"left to the agent ({exc})")

    def store_names(self, net: Network, records: Iterable) -> bool:
        """The other hosts' endpoint names of ``net`` into the local state,
        where the embedded DNS reads them; True if they changed."""
        host = self.cluster.config.host
        names = {(n, ip) for r in records if r.host != host for n in r.names for ip in r.ips}
        if not net.dns or names == self.ctx.store.remote_names(net.id):
            return False
        with self.ctx.store.transaction():
            self.ctx.store.set_remote_names(net.id, names)
        return True

    # ------------------------------------------------------------- agent
    def run_agent(self, stop: threading.Event, report: Callable[[str], None],
                  scan_every: float = 0.5) -> None:
        """Renew the lease every TTL/3 (re-register and republish after an
        expiry), and keep a watcher per local overlay network programming
        its VXLAN device, until ``stop`` is set."""
        from ..cluster import membership
        from ..cluster.keys import Keys

        cfg = self.cluster.config
        watchers: dict[str, _NetWatch] = {}
        next_renew = next_resync = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_renew:
                    try:
                        cfg = self._reread_config(cfg)
                        lease, renewed = membership.renew(self.cluster.store, cfg.host,
                                                          cfg.lease, cfg.advertise,
                                                          Keys(cfg.root))
                        next_renew = now + cfg.ttl / 3
                        if not renewed:
                            cfg.lease = lease
                            cfg.save(self.ctx.store.state_dir)
                            self._republish_all(report)
                            report("lease expired: registered again, records republished")
                    except StoreUnavailable as exc:
                        report(f"store unavailable, retrying: {exc}")
                        next_renew = now + 1.0
                    except Conflict as exc:  # a command registered again meanwhile:
                        report(f"{exc}; re-reading cluster.json")  # its lease is on disk
                        next_renew = now + 0.2
                self._rescan(watchers, report)
                if now >= next_resync:  # bounded staleness, whatever the watches do
                    next_resync = now + max(1.0, cfg.ttl / 2)
                    for name, w in watchers.items():
                        try:
                            if w.resync():
                                report(f"{name}: the watch had missed changes: restarted")
                        except NsnetError as exc:
                            report(f"re-reading {name}: {exc}")
                self._names(watchers, report)
                stop.wait(scan_every)
        finally:
            for w in watchers.values():
                w.stop()

    def _reread_config(self, cfg):
        from ..cluster.membership import ClusterConfig

        fresh = ClusterConfig.load(self.ctx.store.state_dir)  # a CLI may have re-registered
        return fresh if fresh.lease else cfg

    def _republish_all(self, report: Callable[[str], None]) -> None:
        self.cluster.reload()
        for net in self.ctx.store.networks(with_endpoints=False):
            if net.driver == "overlay":
                try:
                    self.publish(net, self.ctx.store.endpoints("e.network_id=?", (net.id,)))
                except NsnetError as exc:
                    report(f"republishing {net.name}: {exc}")

    def _names(self, watchers: dict[str, _NetWatch], report: Callable[[str], None]) -> None:
        """Remote endpoint names for the DNS, written by this (the main)
        thread: the watches only note the records."""
        nets = {n.name: n for n in self.ctx.store.networks(with_endpoints=False)}
        for name, w in watchers.items():
            net = nets.get(name)
            if net is not None and w.changed.is_set():
                w.changed.clear()
                try:
                    with w.watcher.lock:
                        records = list(w.watcher.records.values())
                    self.store_names(net, records)
                except NsnetError as exc:
                    report(f"names of {name}: {exc}")

    def _rescan(self, watchers: dict[str, _NetWatch], report: Callable[[str], None]) -> None:
        """Start a watcher for each local overlay network (or its device
        remade: a new index), stop those of networks gone."""
        nets = {n.name: n for n in self.ctx.store.networks(with_endpoints=False)
                if n.driver == "overlay"}
        links = self.ctx.rtnl.links_named([vxlan_name(n) for n in nets.values()])
        for name in list(watchers):
            net = nets.get(name)
            link = links.get(vxlan_name(net)) if net else None
            if link is None or link.index != watchers[name].index:
                watchers.pop(name).stop()
        for name, net in nets.items():
            link = links.get(vxlan_name(net))
            if name in watchers or link is None:
                continue
            try:
                watchers[name] = _NetWatch(self, net, link.index, report)
            except NsnetError as exc:
                report(f"watching {name}: {exc}")


class _NetWatch:
    """One local overlay network followed by the agent: a registry watcher
    feeding an applier with a netlink socket of its own (watch callbacks
    run on the watch's thread)."""

    def __init__(self, driver: OverlayDriver, net: Network, index: int,
                 report: Callable[[str], None]) -> None:
        from ..cluster.keys import Keys
        from ..cluster.registry import RegistryWatcher, VxlanApplier

        cfg = driver.cluster.config
        self.index = index
        self.report = report
        self.rt = k.open_rtnl(driver.ctx.host)
        self.applier = VxlanApplier(self.rt, index).sync_from_kernel()
        self.changed = threading.Event()  # records changed: names to store
        self.watcher = RegistryWatcher(driver.cluster.store, net.name, cfg.host, self._apply,
                                       local_vtep=cfg.advertise, keys=Keys(cfg.root))
        try:
            self.watcher.start()
        except BaseException:
            self.rt.close()
            raise

    def resync(self) -> bool:
        """Re-read the device and the records (and program the difference);
        if the records differ from what the watch delivered, restart the
        watch: its stream may hang on a member the network cut off (no reset
        reaches a dead path).  Returns whether it had to."""
        with self.watcher.lock:
            before = dict(self.watcher.records)
        # what the device holds now, then the records (that order, as in
        # OverlayDriver.sync): an entry someone else removed (a CLI's sync,
        # a hand) is programmed again within this period, not never
        with kernel_errors(f"reading VXLAN device {self.index}"):
            self.applier.sync_from_kernel()
        self.watcher._list()
        with self.watcher.lock:
            missed = before != self.watcher.records
        if missed:
            self.watcher.stop()
            self.watcher.start()
        return missed

    def _apply(self, desired) -> None:
        self.changed.set()
        for failure in self.applier.apply(desired):
            self.report(failure)

    def stop(self) -> None:
        self.watcher.stop()
        self.rt.close()
