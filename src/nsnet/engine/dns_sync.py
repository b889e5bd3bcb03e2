"""resolv.conf files and the embedded DNS server, kept in step with the
state after each committed change (a service shared by the resources)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from ..dns import RESOLV_MARK, resolv_conf, resolver_network
from ..model import Endpoint
from ..state.trust import ensure_trusted_dir, write_marked_file
from .context import Context
from .intents import DnsIntent, Registry

__all__ = ["DnsSync"]


class DnsSync:
    def __init__(self, ctx: Context, journal: Registry) -> None:
        self.ctx = ctx
        self.journal = journal

    def sync(self, namespaces: Iterable[str]) -> None:
        """After a committed change: each touched namespace's resolv.conf
        names its resolver, and the DNS server runs iff some endpoint wants
        it.  Problems are reported, never fatal: the network itself works."""
        try:
            self._write_resolv_confs(set(namespaces))
            problems = self.ctx.dns.sync(self.ctx.store.dns_networks())
        except OSError as exc:
            problems = {"*": f"{exc.strerror or exc}"}
        for net, why in sorted(problems.items()):
            self.ctx.notify(f"nsnet: error: embedded DNS cannot serve network {net!r}: {why} "
                            "(the network works; names do not resolve on it)")

    def intent(self, namespaces: list[str]) -> int:
        """Inside a change's commit: journal the DNS work that follows it, so a
        crash between the commit and that work is finished by the next nsnet
        (never a stale or missing resolv.conf, or a server nobody starts)."""
        return self.journal.add(DnsIntent(tuple(namespaces)))

    def settle(self, op: int, intent: DnsIntent) -> None:
        self.sync(intent.namespaces)
        with self.ctx.store.transaction():
            self.ctx.store.journal_remove(op)

    def wanted(self, namespaces: Iterable[str]) -> dict[str, str | None]:
        """The resolv.conf text the state wants in each namespace (None: none)."""
        store = self.ctx.store
        names = set(namespaces)
        names -= store.handed_off(names)  # their manager writes theirs
        nets = {n.name: n for n in store.networks(with_endpoints=False)}
        eps: dict[str, list[Endpoint]] = {}
        for ep in store.endpoints_of_namespaces(names):  # by index, not all of them
            eps.setdefault(ep.netns, []).append(ep)
        out: dict[str, str | None] = {}
        for name in names:
            net = resolver_network(eps.get(name, []), nets)
            out[name] = resolv_conf(net) if net else None
        return out

    def _write_resolv_confs(self, namespaces: set[str]) -> None:
        """Each file is recorded in the state before it is written and
        forgotten after it is removed, so a crash in between leaves a record
        that reconcile follows (never a file nobody knows is nsnet's)."""
        store = self.ctx.store
        wanted = self.wanted(namespaces)
        recorded = store.resolv_files(namespaces)
        new = sorted(n for n, text in wanted.items() if text is not None and n not in recorded)
        if new:
            with store.transaction():
                store.add_resolv_files(new)
        gone = [name for name, text in sorted(wanted.items())
                if not self._write_resolv(name, text) and (name in recorded or name in new)]
        if gone:
            with store.transaction():
                store.remove_resolv_files(gone)

    def _read_resolv(self, netns: str) -> str | None:
        try:
            with open(os.path.join(self.ctx.etc_netns_dir, netns, "resolv.conf")) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _write_resolv(self, netns: str, text: str | None) -> bool:
        """Write (or, with None, remove) /etc/netns/NS/resolv.conf -- only a
        file nsnet wrote: someone else's (or a symlink) is left alone.  True
        if nsnet's file is there afterwards."""
        etc = self.ctx.etc_netns_dir
        if text is not None:
            ensure_trusted_dir(etc, "etc-netns directory")
        try:  # relative to checked directory fds, never through a symlink
            return write_marked_file(etc, netns, "resolv.conf", text, RESOLV_MARK)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ELOOP, errno.ENOTDIR):
                raise
            # someone else's folder: left alone, the other namespaces still served
            self.ctx.notify(f"nsnet: warning: {os.path.join(etc, netns)}: {exc.strerror}")
            return False

    def drift(self) -> list[str]:
        """Namespaces whose resolv.conf is not what the state says: every
        namespace with an endpoint and every file nsnet recorded writing
        (O(nsnet's own files), never a scan of /etc/netns)."""
        store = self.ctx.store
        recorded = store.resolv_files()
        wanted = self.wanted(store.netns_with_endpoints() | recorded)
        out = []
        for name, text in sorted(wanted.items()):
            current = self._read_resolv(name)
            if current is not None and not current.startswith(RESOLV_MARK):
                if name in recorded:  # someone else's file now: forget ours
                    out.append(name)
            elif current != text or (text is None and name in recorded):
                out.append(name)
        return out
