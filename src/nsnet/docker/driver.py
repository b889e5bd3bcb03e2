"""Docker's remote NetworkDriver and IpamDriver, over nsnet's public API.

Docker (libnetwork) calls these over HTTP (see :mod:`nsnet.docker.server`);
each handler takes the decoded JSON request and returns the JSON answer, or
raises :class:`PluginError` -- nothing is changed then.  A Docker network is
an ordinary nsnet network (``nsnet network ls`` shows it); a Docker endpoint
is an nsnet *handed-off* endpoint: nsnet makes the veth pair in the host
namespace and Docker moves the container end into the container (Join names
it), renames it ``ethN`` and gives it the address and gateway.  Published
ports (``docker run -p``) are nsnet's published ports (nft maps).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nsnet import (
    ConnectOptions,
    Engine,
    Network,
    NetworkSpec,
    NotFound,
    NsnetError,
    PortMap,
)

from .store import PluginStore

__all__ = ["Driver", "PluginError"]

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

# libnetwork's option keys (netlabel)
GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"  # false: IPv6-only (Docker 28's --ipv4=false)
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"
GATEWAY_REQUEST = "com.docker.network.gateway"
PROTOCOLS = {6: "tcp", 17: "udp"}
PROTO_NUMBERS = {v: k for k, v in PROTOCOLS.items()}

# -o KEY=VALUE on `docker network create -d nsnet`: Docker's bridge names and nsnet's own
BRIDGE_OPTIONS = {
    "com.docker.network.bridge.name": "bridge",
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.enable_icc": "icc",
    "com.docker.network.bridge.enable_ip_masquerade": "masquerade",
    "nsnet.name": "name",
    "nsnet.bridge": "bridge",
    "nsnet.mtu": "mtu",
    "nsnet.icc": "icc",
    "nsnet.masquerade": "masquerade",
    "nsnet.dns": "dns",
    "nsnet.dns_servers": "dns_servers",
}
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "nsnet-local",
                  "GlobalDefaultAddressSpace": "nsnet-global"}
# pools handed out when `docker network create` gives no --subnet (Docker's own defaults)
AUTO_POOLS = [f"172.{n}.0.0/16" for n in range(17, 32)] + \
    [f"192.168.{n}.0/20" for n in range(0, 256, 16)]


class PluginError(Exception):
    """The request is understood but cannot be done; nothing was changed."""


EngineFactory = Callable[[], Engine]


class Driver:
    """Both drivers; one request at a time (Docker sends few, and each is
    one nsnet operation under nsnet's own state lock)."""

    def __init__(self, engine_factory: EngineFactory, store: PluginStore) -> None:
        self._engine_factory = engine_factory
        self.store = store
        self.lock = threading.Lock()

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        eng = self._engine_factory()
        try:
            yield eng
        finally:
            eng.close()

    def handle(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        handler = self.methods().get(method)
        if handler is None:
            raise KeyError(method)
        with self.lock:
            try:
                return handler(body)
            except NsnetError as exc:
                raise PluginError(str(exc)) from None

    def methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "Plugin.Activate": lambda _b: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "NetworkDriver.GetCapabilities":
                lambda _b: {"Scope": "local", "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.ProgramExternalConnectivity": self.program_external,
            "NetworkDriver.RevokeExternalConnectivity": self.revoke_external,
            "NetworkDriver.DiscoverNew": self.discover,
            "NetworkDriver.DiscoverDelete": self.discover,
            "NetworkDriver.AllocateNetwork": self.swarm_only,
            "NetworkDriver.FreeNetwork": self.swarm_only,
            "IpamDriver.GetCapabilities":
                lambda _b: {"RequiresMACAddress": False, "RequiresRequestReplay": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda _b: dict(ADDRESS_SPACES),
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.release_pool,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    # ------------------------------------------------------------ recovery
    def recover(self) -> list[str]:
        """Settle what a plugin killed mid-request left: Docker saw that
        request fail, so creations are rolled back and deletions finished."""
        done = []
        with self.lock, self.engine() as eng:
            for ep_id, rec in list(self.store.endpoints.items()):
                if rec["phase"] != "ready":
                    self._remove_endpoint(eng, rec)
                    del self.store.endpoints[ep_id]
                    done.append(f"{rec['phase']} endpoint {ep_id[:12]}: settled")
            for net_id, rec in list(self.store.networks.items()):
                if rec["phase"] != "ready":
                    self._remove_network(eng, rec["name"])
                    del self.store.networks[net_id]
                    done.append(f"{rec['phase']} network {net_id[:12]}: settled")
            if done:
                self.store.save()
        return done

    # ------------------------------------------------------------ networks
    def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        net_id = _id(body, "NetworkID")
        if net_id in self.store.networks:
            raise PluginError(f"network {net_id[:12]} already exists in nsnet")
        spec = self._spec(net_id, *_ipam_data(body), _options(body))
        self.store.networks[net_id] = {"name": spec.name, "phase": "creating"}
        self.store.save()
        try:
            with self.engine() as eng:
                eng.network_create(spec)
        except BaseException:
            del self.store.networks[net_id]
            self.store.save()
            raise
        self.store.networks[net_id]["phase"] = "ready"
        self.store.save()
        return {}

    def _spec(self, net_id: str, ipv4: dict[str, Any] | None, ipv6: dict[str, Any] | None,
              options: dict[str, Any]) -> NetworkSpec:
        v4 = self._family_fields(ipv4, 4) if ipv4 else {}
        v6 = self._family_fields(ipv6, 6) if ipv6 else {}
        internal = options.get(INTERNAL, False)
        if not isinstance(internal, bool):
            raise PluginError(f"option {INTERNAL} must be true or false, not {internal!r}")
        # Docker's embedded DNS (127.0.0.11) resolves its containers: nsnet's
        # own server is opt-in (-o nsnet.dns=true) for namespaces nsnet connects
        fields: dict[str, Any] = {"name": f"docker-{net_id[:12]}", "internal": internal}
        generic = options.get(GENERIC)
        generic = {} if generic is None else generic
        if not isinstance(generic, dict):
            raise PluginError(f"option {GENERIC} must be an object of -o KEY=VALUE options")
        for key, value in generic.items():
            fields.update(_bridge_option(key, value))
        aux = {**v4.get("aux", {}), **v6.get("aux", {})}
        return NetworkSpec(fields["name"], v4.get("subnet", ""), v4.get("gateway"),
                           v4.get("range"), fields.get("bridge"), fields.get("mtu"),
                           fields.get("masquerade", True), internal, fields.get("icc", True),
                           fields.get("dns", False), fields.get("dns_servers", ()),
                           tuple(aux.items()), ipv6=bool(v6), subnet6=v6.get("subnet"),
                           gateway6=v6.get("gateway"), ip_range6=v6.get("range"),
                           ipv4=bool(v4))

    def _family_fields(self, data: dict[str, Any], version: int) -> dict[str, Any]:
        """One IPv4Data / IPv6Data entry -> subnet, gateway, range (the
        sub-pool when nsnet's IPAM holds the pool) and aux addresses."""
        what = f"IPv{version}Data"
        subnet = _cidr(data.get("Pool"), f"{what}.Pool", version)
        gateway = data.get("Gateway") or None
        if gateway is not None:
            gateway = str(_address(gateway, f"{what}.Gateway", version))
        aux = data.get("AuxAddresses")
        aux = {} if aux is None else aux
        if not isinstance(aux, dict):
            raise PluginError(f"{what}.AuxAddresses must be an object of NAME: IP")
        pool = self._pool_of_subnet(str(subnet))
        return {"subnet": str(subnet), "gateway": gateway,
                "range": pool["range"] if pool and pool["range"] != pool["subnet"] else None,
                "aux": {str(k): str(_address(v, f"aux address {k}", version))
                        for k, v in aux.items()}}

    def delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        net_id = _id(body, "NetworkID")
        rec = self._network_record(net_id)
        rec["phase"] = "deleting"
        self.store.save()
        try:
            with self.engine() as eng:
                self._remove_network(eng, rec["name"])
        except BaseException:
            rec["phase"] = "ready"
            self.store.save()
            raise
        del self.store.networks[net_id]
        self.store.save()
        return {}

    @staticmethod
    def _remove_network(eng: Engine, name: str) -> None:
        try:
            net = eng.network(name)
        except NotFound:
            return
        others = [e.netns for e in net.endpoints if e.netns not in eng.handed_off()]
        if others:
            raise PluginError(f"nsnet network {name!r} still has endpoints nsnet connected "
                              f"outside Docker ({', '.join(others[:5])}); disconnect them first")
        eng.network_rm(name, force=True)

    def _network_record(self, net_id: str) -> dict[str, Any]:
        rec = self.store.networks.get(net_id)
        if rec is None or rec["phase"] != "ready":
            raise PluginError(f"network {net_id[:12]} is not an nsnet network")
        return rec

    # ----------------------------------------------------------- endpoints
    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        net = self._network_record(_id(body, "NetworkID"))
        ep_id = _id(body, "EndpointID")
        if ep_id in self.store.endpoints:
            raise PluginError(f"endpoint {ep_id[:12]} already exists")
        iface = body.get("Interface")
        iface = {} if iface is None else iface
        if not isinstance(iface, dict):
            raise PluginError("Interface must be an object")
        address, mac = iface.get("Address") or "", iface.get("MacAddress") or ""
        address6 = iface.get("AddressIPv6") or ""
        if not all(isinstance(v, str) for v in (address, address6, mac)):
            raise PluginError("Interface.Address, AddressIPv6 and MacAddress must be strings")
        ip = str(_address(address, "Interface.Address", 4)) if address else None
        ip6 = str(_address(address6, "Interface.AddressIPv6", 6)) if address6 else None
        _options(body)
        name = f"docker-{ep_id[:12]}"
        self.store.endpoints[ep_id] = {"network": net["name"], "name": name,
                                       "phase": "creating", "joined": False, "ports": [],
                                       "exposed": []}
        self.store.save()
        try:
            with self.engine() as eng:
                ep = eng.connect_handoff(net["name"], name,
                                         ConnectOptions(ip=ip, ip6=ip6, mac=mac or None))
        except BaseException:
            del self.store.endpoints[ep_id]
            self.store.save()
            raise
        self.store.endpoints[ep_id]["phase"] = "ready"
        self.store.save()
        answer: dict[str, str] = {}
        if not address and ep.address:  # Docker rejects an answer that changes what it gave
            answer["Address"] = ep.address
        if not address6 and ep.address6:
            answer["AddressIPv6"] = ep.address6
        if not mac:
            answer["MacAddress"] = ep.mac
        return {"Interface": answer} if answer else {}

    def _endpoint_record(self, body: dict[str, Any]) -> dict[str, Any]:
        net = self._network_record(_id(body, "NetworkID"))
        ep_id = _id(body, "EndpointID")
        rec = self.store.endpoints.get(ep_id)
        if rec is None or rec["phase"] != "ready" or rec["network"] != net["name"]:
            raise PluginError(f"endpoint {ep_id[:12]} does not exist on network "
                              f"{body['NetworkID'][:12]}")
        return rec

    def endpoint_info(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        with self.engine() as eng:
            ep = next((e for e in eng.network(rec["network"]).endpoints
                       if e.netns == rec["name"]), None)
        value: dict[str, Any] = {PORTMAP: [_binding(m) for m in _maps(rec["ports"])],
                                 EXPOSED: rec["exposed"], "nsnet.network": rec["network"],
                                 "nsnet.endpoint": rec["name"]}
        if ep:
            value["nsnet.host_ifname"] = ep.host_ifname
        return {"Value": value}

    def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        rec["phase"] = "deleting"
        self.store.save()
        with self.engine() as eng:
            self._remove_endpoint(eng, rec)
        del self.store.endpoints[body["EndpointID"]]
        self.store.save()
        return {}

    @staticmethod
    def _remove_endpoint(eng: Engine, rec: dict[str, Any]) -> None:
        """Remove it from nsnet if it is still there (reconcile may have
        released it when its container's namespace died)."""
        try:
            net = eng.network(rec["network"])
        except NotFound:
            return
        if any(e.netns == rec["name"] for e in net.endpoints):
            eng.disconnect(rec["network"], [rec["name"]])

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        key = body.get("SandboxKey", "")
        if not isinstance(key, str) or not key:
            raise PluginError("SandboxKey must name the container's sandbox")
        _options(body)
        if rec["joined"]:
            raise PluginError(f"endpoint {body['EndpointID'][:12]} is already joined to a "
                              "sandbox")
        with self.engine() as eng:
            net = eng.network(rec["network"])
        ep = next((e for e in net.endpoints if e.netns == rec["name"]), None)
        if ep is None:
            raise PluginError(f"endpoint {body['EndpointID'][:12]}'s veth pair is gone "
                              "(its namespace died); remove and recreate the endpoint")
        rec["joined"] = True
        self.store.save()
        answer: dict[str, Any] = {"InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"}}
        if net.internal:  # as Docker's bridge: no way out, so no default route
            answer["DisableGatewayService"] = True
        else:
            if net.has_ipv4:
                answer["Gateway"] = net.gateway
            if net.has_ipv6:
                answer["GatewayIPv6"] = net.gateway6
        return answer

    def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        if not rec["joined"]:
            raise PluginError(f"endpoint {body['EndpointID'][:12]} is not joined")
        rec["joined"] = False
        self.store.save()
        return {}

    # -------------------------------------------------- published ports
    def program_external(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        options = _options(body)
        wanted = _port_requests(options.get(PORTMAP))
        exposed = options.get(EXPOSED) or []
        if not isinstance(exposed, list):
            raise PluginError(f"option {EXPOSED} must be a list")
        held = set(_maps(rec["ports"]))
        with self.engine() as eng:
            maps = self._choose_host_ports(eng, wanted, held)
            new = tuple(m for m in maps if m not in held)
            if new:
                eng.port_add(rec["network"], rec["name"], new)
        rec["ports"] = [[m.proto, m.host_ip, m.host_port, m.port] for m in sorted(held | set(new))]
        rec["exposed"] = exposed
        self.store.save()
        return {}

    @staticmethod
    def _choose_host_ports(eng: Engine, wanted: list[tuple[str, str, int, int, int]],
                           held: set[PortMap]) -> list[PortMap]:
        """Docker's -p: a host port, a range to pick from, or none (an
        ephemeral one, from the host's ip_local_port_range)."""
        busy = {(p.port.proto, p.port.host_port) for p in eng.ports()} | \
            {(m.proto, m.host_port) for m in held}
        out = []
        for proto, host_ip, first, last, port in wanted:
            mine = next((m for m in held if (m.proto, m.host_ip, m.port) == (proto, host_ip, port)
                         and (not first or first <= m.host_port <= last)), None)
            if mine:
                out.append(mine)
                continue
            if not first:
                first, last = _ephemeral_range()
            if first == last:
                choice = first
            else:
                choice = next((p for p in range(first, last + 1) if (proto, p) not in busy), 0)
                if not choice:
                    raise PluginError(f"no free host port in {first}-{last}/{proto}")
            busy.add((proto, choice))
            out.append(PortMap(proto, host_ip, choice, port))
        return out

    def revoke_external(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._endpoint_record(body)
        maps = tuple(_maps(rec["ports"]))
        if maps:
            with self.engine() as eng:
                held = {p.port for p in eng.ports(rec["network"]) if p.netns == rec["name"]}
                gone = tuple(m for m in maps if m in held)
                if gone:
                    eng.port_rm(rec["network"], rec["name"], gone)
        rec["ports"] = []
        self.store.save()
        return {}

    # ------------------------------------------------------ notifications
    @staticmethod
    def discover(body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body.get("DiscoveryType"), int):
            raise PluginError("DiscoveryType must be a number")
        return {}  # node discovery matters to multi-host drivers only

    @staticmethod
    def swarm_only(body: dict[str, Any]) -> dict[str, Any]:
        raise PluginError("nsnet is a local-scope driver: swarm networks are not supported")

    # --------------------------------------------------------------- IPAM
    def request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        space = body.get("AddressSpace", "")
        if space not in ADDRESS_SPACES.values():
            raise PluginError(f"address space {space!r} is not nsnet's "
                              f"({', '.join(ADDRESS_SPACES.values())})")
        version = 6 if body.get("V6") else 4
        for key in ("Pool", "SubPool"):
            if not isinstance(body.get(key, ""), str):
                raise PluginError(f"{key} must be a CIDR string")
        _options(body)
        subnet = _cidr(body["Pool"], "Pool", version) if body.get("Pool") else \
            self._free_subnet(version)
        if subnet.prefixlen > subnet.max_prefixlen - 2:
            raise PluginError(f"pool {subnet} is too small: a network needs at least a "
                              f"/{subnet.max_prefixlen - 2}")
        sub = _cidr(body["SubPool"], "SubPool", version) if body.get("SubPool") else subnet
        if not sub.subnet_of(subnet):
            raise PluginError(f"sub-pool {sub} is not inside pool {subnet}")
        for pid, pool in self.store.pools.items():
            held = ipaddress.ip_network(pool["subnet"])
            if held.version == subnet.version and held.overlaps(subnet):
                raise PluginError(f"pool {subnet} overlaps pool {pool['subnet']} ({pid})")
        pool_id = f"{space}/{subnet}" + (f"/{sub}" if sub != subnet else "")
        self.store.pools[pool_id] = {"subnet": str(subnet), "range": str(sub), "addresses": {}}
        self.store.save()
        return {"PoolID": pool_id, "Pool": str(subnet), "Data": {}}

    def _free_subnet(self, version: int) -> Net:
        taken = [ipaddress.ip_network(p["subnet"]) for p in self.store.pools.values()]
        if version == 6:  # a /64 of the host's unique-local prefix, as `--ipv6` alone gets
            with self.engine() as eng:
                return ipaddress.IPv6Network(eng.ula_subnet([str(t) for t in taken
                                                             if t.version == 6]))
        with self.engine() as eng:
            taken += [ipaddress.ip_network(n.subnet) for n in eng.networks() if n.subnet]
            taken += [ipaddress.ip_network(r.dst, strict=False) for r in eng.snapshot().routes
                      if not r.is_default]
        for text in AUTO_POOLS:
            net = ipaddress.IPv4Network(text)
            if not any(t.version == 4 and net.overlaps(t) for t in taken):
                return net
        raise PluginError("every default pool is taken: give --subnet")

    def release_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = self._pool_id(body)
        del self.store.pools[pool_id]
        self.store.save()
        return {}

    def request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = self._pool_id(body)
        pool = self.store.pools[pool_id]
        options = _options(body)
        address = body.get("Address") or ""
        if not isinstance(address, str):
            raise PluginError("Address must be a string")
        subnet = ipaddress.ip_network(pool["subnet"])
        is_gateway = options.get("RequestAddressType") == GATEWAY_REQUEST
        if address:
            ip = _address(address, "Address", subnet.version)
            self._check_free(pool, subnet, ip)
        elif is_gateway:
            ip = subnet.network_address + 1
            self._check_free(pool, subnet, ip)
        else:
            ip = self._lowest_free(pool, subnet)
        pool["addresses"][str(ip)] = "gateway" if is_gateway else "address"
        self.store.save()
        return {"Address": f"{ip}/{subnet.prefixlen}", "Data": {}}

    def _check_free(self, pool: dict[str, Any], subnet: Net, ip: Addr) -> None:
        if ip not in subnet or ip in _reserved(subnet):
            raise PluginError(f"address {ip} is not a host address of pool {subnet}")
        if str(ip) in pool["addresses"] or str(ip) in self._used_by_nsnet(subnet):
            raise PluginError(f"address {ip} is already in use in pool {subnet}")

    def _lowest_free(self, pool: dict[str, Any], subnet: Net) -> Addr:
        used = set(pool["addresses"]) | self._used_by_nsnet(subnet)
        rng = ipaddress.ip_network(pool["range"])
        reserved = _reserved(subnet)
        for ip in rng:  # lazily: a /64 is never walked past its first free address
            if ip not in reserved and str(ip) not in used:
                return ip
        raise PluginError(f"no free address in {rng}")

    def _used_by_nsnet(self, subnet: Net) -> set[str]:
        """Addresses nsnet itself gave out on the network of this pool
        (endpoints connected with `nsnet connect`), and its gateway."""
        with self.engine() as eng:
            net: Network | None = next((n for n in eng.networks()
                                        if str(subnet) in (n.subnet, n.subnet6)), None)
        if net is None:
            return set()
        return {ip for e in net.endpoints for ip in e.ips} | set(net.gateways)

    def release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self.store.pools[self._pool_id(body)]
        address = body.get("Address")
        if not isinstance(address, str) or not address:
            raise PluginError("Address must name the address to release")
        ip = str(_address(address, "Address", ipaddress.ip_network(pool["subnet"]).version))
        if ip not in pool["addresses"]:
            raise PluginError(f"address {ip} is not allocated in pool {pool['subnet']}")
        del pool["addresses"][ip]
        self.store.save()
        return {}

    def _pool_id(self, body: dict[str, Any]) -> str:
        pool_id = body.get("PoolID")
        if not isinstance(pool_id, str) or pool_id not in self.store.pools:
            raise PluginError(f"pool {pool_id!r} is not an nsnet pool")
        return pool_id

    def _pool_of_subnet(self, subnet: str) -> dict[str, Any] | None:
        return next((p for p in self.store.pools.values() if p["subnet"] == subnet), None)


# ------------------------------------------------------------ decoding
def _id(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or not value.isalnum() or len(value) > 128:
        raise PluginError(f"{key} must be Docker's hexadecimal ID, not {value!r}")
    return value


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PluginError(f"{key} must be a list")
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("Options")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PluginError("Options must be an object")
    return value


def _ipam_data(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """CreateNetwork's IPv4Data and IPv6Data: at most one pool each, at
    least one in all; IPv6 needs EnableIPv6 unless a v6 pool came anyway
    (Docker 20.10 sends one only with --ipv6)."""
    v4, v6 = _list(body, "IPv4Data"), _list(body, "IPv6Data")
    options = _options(body)
    if options.get(ENABLE_IPV4) is False:  # Docker 28's --ipv4=false still sends no v4 pool
        v4 = []
    if len(v4) > 1 or len(v6) > 1 or not (v4 or v6) or \
            not all(isinstance(d, dict) for d in v4 + v6):
        raise PluginError(f"an nsnet network has exactly one IPv4 subnet and/or one IPv6 "
                          f"subnet; Docker sent {len(v4)} and {len(v6)}")
    if options.get(ENABLE_IPV6) is False and v6:
        raise PluginError("Docker sent an IPv6 pool for a network without --ipv6")
    return (v4[0] if v4 else None), (v6[0] if v6 else None)


def _cidr(text: Any, what: str, version: int) -> Net:
    try:
        net = ipaddress.ip_network(str(text), strict=True)
    except ValueError:
        raise PluginError(f"{what} {text!r} is not a CIDR without host bits") from None
    if net.version != version or "/" not in str(text):
        raise PluginError(f"{what} {text!r} is not an IPv{version} CIDR")
    return net


def _address(text: Any, what: str, version: int | None = None) -> Addr:
    """An address of ``version`` (any if None), with or without /prefix
    (libnetwork sends both forms)."""
    try:
        ip = ipaddress.ip_interface(str(text)).ip
    except ValueError:
        raise PluginError(f"{what} {text!r} is not an IP address") from None
    if version is not None and ip.version != version:
        raise PluginError(f"{what} {text!r} is not an IPv{version} address")
    return ip


def _reserved(subnet: Net) -> tuple[Addr, ...]:
    """Never handed out: the network address (IPv6: the subnet-router
    anycast) and the IPv4 broadcast."""
    if subnet.version == 6:
        return (subnet.network_address,)
    return subnet.network_address, subnet.broadcast_address


def _bridge_option(key: str, value: Any) -> dict[str, Any]:
    field = BRIDGE_OPTIONS.get(key)
    if field is None:
        raise PluginError(f"unknown option -o {key}: nsnet knows "
                          f"{', '.join(sorted(BRIDGE_OPTIONS))}")
    if not isinstance(value, str):
        raise PluginError(f"option -o {key} must be a string")
    if field in ("icc", "masquerade", "dns"):
        if value.lower() not in ("true", "false", "1", "0"):
            raise PluginError(f"option -o {key}={value} must be true or false")
        return {field: value.lower() in ("true", "1")}
    if field == "mtu":
        if not value.isdigit():
            raise PluginError(f"option -o {key}={value} must be a number")
        return {field: int(value)}
    if field == "dns_servers":
        return {field: tuple(filter(None, value.split(",")))}
    return {field: value}


def _port_requests(value: Any) -> list[tuple[str, str, int, int, int]]:
    """libnetwork's PortBinding list -> (proto, host_ip, first, last, port):
    first == 0 asks for an ephemeral host port."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PluginError(f"option {PORTMAP} must be a list of port bindings")
    out = []
    for b in value:
        if not isinstance(b, dict):
            raise PluginError(f"port binding {b!r} must be an object")
        proto = PROTOCOLS.get(b.get("Proto"))  # type: ignore[arg-type]
        if proto is None:
            raise PluginError(f"port binding protocol {b.get('Proto')!r} is not supported "
                              "(tcp or udp)")
        nums = [b.get(k, 0) for k in ("Port", "HostPort", "HostPortEnd")]
        if any(not isinstance(n, int) or not 0 <= n <= 65535 for n in nums) or not nums[0]:
            raise PluginError(f"port binding {b!r} has a bad port number")
        port, first, last = nums
        host_ip = b.get("HostIP") or ""
        if not isinstance(host_ip, str):
            raise PluginError("HostIP must be a string")
        # 0.0.0.0: every address (nsnet's "" serves both families, as Docker's
        # -p does); "::" every IPv6 one only
        host_ip = "" if host_ip in ("0.0.0.0", "") else "::" if host_ip == "::" else \
            str(_address(host_ip, "HostIP"))
        last = max(last, first)
        out.append((proto, host_ip, first, last, port))
    return out


def _maps(rows: list[list[Any]]) -> list[PortMap]:
    return [PortMap(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


def _binding(m: PortMap) -> dict[str, Any]:
    return {"Proto": PROTO_NUMBERS[m.proto], "IP": "", "Port": m.port,
            "HostIP": m.host_ip or "0.0.0.0", "HostPort": m.host_port,
            "HostPortEnd": m.host_port}


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def default_store_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "docker-plugin")
