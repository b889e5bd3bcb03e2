"""Probes: ping from a namespace, and the all-pairs reachability check --
over ICMPv6 too: an IPv6 address is pinged with ICMPv6 echo, and on a
dual-stack network a pair counts as reachable only when both families are."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .. import kernel as k
from ..errors import CheckFailed, InvalidInput
from ..model import Endpoint, Network, parse_ip
from .context import NEIGH_TIDY_ABOVE, Context, kernel_errors

__all__ = ["CheckResult", "Probes", "check_ok"]


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


def check_ok(results: list[CheckResult]) -> None:
    bad = [f"{r.network}: {a} -> {b}" for r in results for a, b in r.failed]
    if bad:
        raise CheckFailed(f"{len(bad)} pair(s) unreachable: " + ", ".join(bad[:5]))


class Probes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def ping(self, netns: str, address: str, count: int = 4, interval: float = 1.0,
             timeout: float = 1.0) -> Iterator[k.Echo]:
        ip = parse_ip(address)  # either family: ICMPv6 echo for an IPv6 address
        if count < 1:
            raise InvalidInput("count must be at least 1")
        ns = self.ctx.open_ns(netns)
        try:
            with kernel_errors(f"ping from {netns!r}"):
                yield from k.ping(ns.fd, str(ip), count, interval, timeout)
        finally:
            ns.close()

    def check_network(self, net: Network, timeout: float) -> CheckResult:
        reach: dict[tuple[str, str], bool] = {}
        handed = self.ctx.handed_off()  # probed from the inside only by their manager
        mine = [e for e in net.endpoints if e.netns not in handed]
        tidy = len(mine) > NEIGH_TIDY_ABOVE
        for src in mine:
            targets = [e for e in mine if e is not src]
            ns = self.ctx.open_ns(src.netns)
            try:
                with kernel_errors(f"probing from {src.netns!r}"):
                    ok = k.reachable(ns.fd, [ip for e in targets for ip in e.ips], timeout)
            finally:
                ns.close()
            for dst in targets:  # a dual-stack pair is reachable when both families are
                reach[(src.netns, dst.netns)] = all(ok[ip] for ip in dst.ips)
            if tidy:
                self._forget_neighbours(src, targets)
        return CheckResult(net.name, tuple(e.netns for e in mine), reach)

    def _forget_neighbours(self, src: Endpoint, targets: list[Endpoint]) -> None:
        """Drop the ARP entries one row of probes created, on both sides --
        dynamic ones only: an entry someone made PERMANENT (or NOARP) is theirs.

        The kernel's ARP table is shared by all namespaces and holds at most
        gc_thresh3 (1024) dynamic entries, settable only in the root
        namespace: a full matrix over N endpoints would need N*(N-1)."""
        pairs = [(src, [ip for t in targets for ip in t.ips])] + [(t, list(src.ips))
                                                                  for t in targets]
        for ep, ips in pairs:
            ns = self.ctx.open_ns(ep.netns)
            try:
                with k.open_rtnl(ns) as rt:
                    index = rt.link(ep.ifname).index
                    kept = rt.static_neighbours(index)
                    rt.batch([k.req_del_neigh(index, ip) for ip in ips if ip not in kept])
            except OSError:
                pass  # best effort: the probe result stands either way
            finally:
                ns.close()
