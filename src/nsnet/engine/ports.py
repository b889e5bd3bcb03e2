"""Published ports (Docker's ``-p``): DNAT entries in nsnet's firewall.

Everything that can be wrong with a mapping is found before anything is
sent: a clash with another mapping, an address the host does not have, a
network's gateway, a host service already listening there."""

from __future__ import annotations

from .. import kernel as k
from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, PoolExhausted
from ..model import V6_ANY, Endpoint, Network, PortMap, Published, first_clash
from .context import Context, kernel_errors

__all__ = ["Ports", "diverts", "match_ephemeral"]


def diverts(m: PortMap, lst: k.Listener, gateways: set[str], ipv6: bool = False) -> bool:
    """Whether mapping ``m`` would take the traffic of host listener ``lst``
    (same protocol and port already matched); ``ipv6``: the endpoint's
    network has IPv6, so the mapping's IPv6 side is DNATed too."""
    addr = lst.address.removeprefix("::ffff:")
    if addr in gateways:
        return False  # nsnet's DNS: traffic to a gateway is never DNATed
    if ":" in addr and addr != "::":  # a specific IPv6 address
        return ipv6 and 6 in m.families and m.host_ip in ("", V6_ANY, addr)
    if m.host_ip == V6_ANY:
        return ipv6 and addr == "::"
    return not m.host_ip or addr in ("0.0.0.0", "::") or addr == m.host_ip


def match_ephemeral(ports: tuple[PortMap, ...],
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


def assign_ephemeral(ports: tuple[PortMap, ...], busy: set[tuple[str, int]],
                     low: int, high: int) -> tuple[PortMap, ...]:
    """Host port 0 becomes the lowest port of [low, high] not in ``busy``
    (proto, port) nor asked for by another mapping (pure)."""
    busy = busy | {(m.proto, m.host_port) for m in ports}
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


class Ports:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def list(self, network: str | None = None) -> list[Published]:
        return [p for p in self.ctx.store.published() if network in (None, p.network)]

    def check_publishable(self, net: Network, ports: tuple[PortMap, ...] | list[PortMap],
                          force: bool = False) -> None:
        """Everything that can be wrong with publishing, before anything is sent."""
        if not ports:
            return
        if net.internal:
            raise InvalidInput(f"network {net.name!r} is internal: nothing from outside can "
                               "reach it, so ports cannot be published on it")
        near = self.ctx.store.published_at(ports)
        clash = first_clash(ports, (p.port for p in near))
        if clash:
            mine, theirs = clash
            owner = next((p for p in near if p.port == theirs), None)
            where = f" (held by {owner.netns!r} on {owner.network!r})" if owner else ""
            raise AlreadyExists(f"port {mine.host_ip or '0.0.0.0'}:{mine.host_port}/"
                                f"{mine.proto} is already published{where}")
        for m in ports:
            if 6 not in m.families and not net.has_ipv4:
                raise InvalidInput(f"cannot publish {m}: network {net.name!r} is IPv6-only "
                                   "(publish on an IPv6 address, [::], or every address)")
            if 4 not in m.families and not net.has_ipv6:
                raise InvalidInput(f"cannot publish {m}: network {net.name!r} has no IPv6")
        specific = any(m.host_ip not in ("", V6_ANY) for m in ports)
        rtnl = self.ctx.rtnl
        local = {a.address for fam in (k.INET, k.INET6)
                 for a in rtnl.addresses(fam)} if specific else set()
        gateways = self._gateways() if specific else {}
        for m in ports:
            if m.host_ip and m.host_ip != V6_ANY and m.host_ip not in local \
                    and not m.host_ip.startswith("127."):
                raise InvalidInput(f"cannot publish on {m.host_ip}: it is not an address of the "
                                   "host namespace")
            if m.host_ip in gateways:
                raise InvalidInput(f"cannot publish on {m.host_ip}: it is the gateway of network "
                                   f"{gateways[m.host_ip]!r} (traffic to a gateway is never "
                                   "a published port's)")
        if not force:
            self._check_host_listeners(ports, net.has_ipv6)

    def _gateways(self) -> dict[str, str]:
        return {gw: n.name for n in self.ctx.store.networks(with_endpoints=False)
                for gw in n.gateways}

    def _check_host_listeners(self, ports: tuple[PortMap, ...] | list[PortMap],
                              ipv6: bool = False) -> None:
        """A mapping over a host service would divert the service's traffic
        to the endpoint (the DNAT comes first): refuse, naming the listener,
        as Docker's "port is already allocated" -- unless forced.  A bind
        test per mapping; the socket tables are read only for a port in use."""
        host = self.ctx.host
        with kernel_errors("looking for listeners in the host namespace"):
            busy = k.busy_ports(host, [(m.proto, m.host_ip, m.host_port) for m in ports])
            if not busy:
                return
            found: dict[tuple[str, int], list[k.Listener]] = {}
            for lst in k.listeners(host, tuple(sorted({proto for proto, _, _ in busy}))):
                found.setdefault((lst.proto, lst.port), []).append(lst)
        gateways = set(self._gateways())
        for m in ports:
            for lst in found.get((m.proto, m.host_port), []):
                if diverts(m, lst, gateways, ipv6):
                    owner = k.socket_owner(lst.inode) or f"socket inode {lst.inode}"
                    raise Conflict(f"port {m.host_ip or '0.0.0.0'}:{m.host_port}/{m.proto} is "
                                   f"already in use in the host namespace ({lst.address}:"
                                   f"{lst.port} by {owner}); --force publishes over it "
                                   "(its traffic then goes to the endpoint)")

    def assign_ephemeral(self, ports: tuple[PortMap, ...]) -> tuple[PortMap, ...]:
        """Docker's ``-p 80``: host port 0 becomes the lowest port of the host
        namespace's ip_local_port_range that nsnet does not publish yet (for
        that protocol, on any address)."""
        if all(m.host_port for m in ports):
            return ports
        try:
            low, high = (int(x) for x in
                         k.read_sysctl(self.ctx.host, "net/ipv4/ip_local_port_range").split())
        except (OSError, ValueError):
            low, high = 32768, 60999
        busy = {(p.port.proto, p.port.host_port) for p in self.ctx.store.published()}
        return assign_ephemeral(ports, busy, low, high)

    def plan_change(self, net: Network, ep: Endpoint, ports: tuple[PortMap, ...],
                    adding: bool, force: bool = False) -> list[Published]:
        """The mappings ``port add``/``port rm`` change, every one checked."""
        if adding:
            ports = self.assign_ephemeral(ports)
            self.check_publishable(net, ports, force)
            return [Published(ep.id, net.name, ep.netns, ep.ip, m, ep.ip6,
                              net.ipv6_mode == "routed") for m in ports]
        held = {p.port: p for p in self.ctx.store.published(ep.id)}
        ports = match_ephemeral(ports, held)
        missing = [m for m in ports if m not in held]
        if missing:
            raise NotFound(f"{ep.netns!r} on {net.name!r} does not publish {missing[0]}")
        return [held[m] for m in ports]
