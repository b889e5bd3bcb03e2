"""Keeping nsnet's nftables tables in step with the state (a service that
the resources share: rules themselves are pure data in :mod:`nsnet.firewall.rules`)."""

from __future__ import annotations

from .. import kernel as k
from ..crash import crashpoint
from ..errors import KernelError
from ..firewall import rules as fw
from ..model import Endpoint, Network, Published
from .context import Context, kernel_errors
from .intents import NetworkRef

__all__ = ["FirewallSync"]


def _family(cmd: dict) -> str | None:
    """The table family a command acts on (None: a command without one)."""
    for body in cmd.values():
        for obj in body.values() if isinstance(body, dict) else ():
            if isinstance(obj, dict) and "family" in obj:
                return obj["family"]
    return None


class FirewallSync:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def apply(self, commands: list[dict], skeleton: bool = False,
              ipv6: bool | None = None) -> None:
        """One atomic transaction.  The fixed skeleton is left out unless
        asked for or missing (its idempotent re-add costs the kernel an RCU
        grace period, ~14 ms, per base chain update): a transaction that
        fails is without effect, and is retried once with the skeleton first
        -- the ip6 table's too when the commands touch it (``ipv6``: say so
        rather than have the commands searched)."""
        if ipv6 is None:
            ipv6 = any(_family(c) == "ip6" for c in commands)
        if skeleton:
            self.ctx.firewall.apply(fw.skeleton(ipv6) + commands)
            return
        try:
            self.ctx.firewall.apply(commands)
        except KernelError:
            self.ctx.firewall.apply(fw.skeleton(ipv6) + commands)

    def desired(self, networks: list[Network] | None = None) -> list[dict]:
        """The transaction that rebuilds nsnet's firewall from the state
        (``networks``: the state's networks with their endpoints, if the
        caller read them already -- reconcile did, for 5000 endpoints)."""
        nets = self.ctx.store.networks() if networks is None else networks
        return fw.full(nets, self.ctx.store.published())

    def differences(self, networks: list[Network] | None = None) -> list[str]:
        """Objects of nsnet's tables whose *content* differs from the state
        (a same-count edit too: a rule's verdict, a map element's value).
        The driver compares the live tables with the kernel's own rendering
        of :meth:`desired` (see :mod:`nsnet.firewall`); off the hot path:
        reconcile, its dry run and the sync after a rollback only."""
        return self.ctx.firewall.drift(self.desired(networks))

    def sync(self) -> None:
        """Rebuild the firewall if it drifted (after rollbacks; O(state))."""
        if self.differences():
            self.ctx.firewall.apply(self.desired())

    def forget_udp(self, pubs: list[Published]) -> None:
        ports = {(p.port.host_ip, p.port.host_port) for p in pubs if p.port.proto == "udp"}
        if ports:
            with kernel_errors("flushing UDP conntrack entries"):
                k.forget_udp(self.ctx.host, ports)

    def connect(self, net: Network, endpoints: list[Endpoint], ports: list[Published]) -> None:
        cmds = fw.endpoints_add(net, endpoints) + fw.ports_add(ports)
        if cmds:
            self.apply(cmds)
            crashpoint("connect:firewall")
            self.forget_udp(ports)

    def delete(self, eps: list[Endpoint], network: NetworkRef | None) -> None:
        """Remove the firewall entries of these endpoints (and network) in one
        transaction; every command is idempotent, so a roll-forward may rerun it."""
        store = self.ctx.store
        pubs = store.published_of(e.id for e in eps)
        nets = {n.name: n for n in store.networks(with_endpoints=False)}
        full = store.network_by_id(network.id) if network else None
        if full:  # the doomed network, with its endpoints
            nets[full.name] = full
        cmds = fw.ports_remove(pubs)
        for name in sorted({e.network for e in eps} & set(nets)):
            cmds += fw.endpoints_remove(nets[name], [e for e in eps if e.network == name])
        doomed = next((n for n in nets.values() if network and n.id == network.id), None)
        if doomed:
            others = [n for n in nets.values() if n is not doomed]
            if not others:
                self.ctx.firewall.apply(fw.teardown() + fw.teardown6())
            else:
                self.apply(cmds + fw.network_remove(doomed, others))
        elif cmds:
            self.apply(cmds)
        crashpoint("delete:firewall")
        self.forget_udp(pubs)
