"""resolv.conf files and the embedded DNS server, kept in step with the
state after each committed change (a service shared by the resources)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from ..dns import RESOLV_MARK, resolv_conf, resolver_network
from ..model import Endpoint, Network
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

    def wanted(self, namespaces: Iterable[str], networks: list[Network] | None = None
               ) -> dict[str, str | None]:
        """The resolv.conf text the state wants in each namespace (None: none);
        ``networks``: the state's networks with their endpoints, if the caller
        read them already (else only these namespaces' endpoints are read)."""
        store = self.ctx.store
        names = set(namespaces)
        names -= store.handed_off(names)  # their manager writes theirs
        if networks is None:
            nets = {n.name: n for n in store.networks(with_endpoints=False)}
            found = store.endpoints_of_namespaces(names)  # by index, not all of them
        else:
            nets = {n.name: n for n in networks}
            found = [e for n in networks for e in n.endpoints if e.netns in names]
        eps: dict[str, list[Endpoint]] = {}
        for ep in found:
            eps.setdefault(ep.netns, []).append(ep)
        texts = {net: resolv_conf(nets[net]) for net in nets}  # one text per network
        out: dict[str, str | None] = {}
        for name in names:
            net = resolver_network(eps.get(name, []), nets)
            out[name] = texts[net.name] if net else None
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

    def _read_resolvs(self, names: Iterable[str]) -> dict[str, str | None]:
        """Each namespace's /etc/netns/NS/resolv.conf as open() in text mode
        reads it (None: missing).  One directory fd for all and bare
        os.open/os.read: a reconcile reads 5000, and open()'s file objects
        made that ~0.2 s of CPU against ~0.05."""
        try:
            etc = os.open(self.ctx.etc_netns_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return dict.fromkeys(names)
        try:
            return {name: _read_text(etc, os.path.join(name, "resolv.conf")) for name in names}
        finally:
            os.close(etc)

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

    def drift(self, networks: list[Network] | None = None) -> list[str]:
        """Namespaces whose resolv.conf is not what the state says: every
        namespace with an endpoint and every file nsnet recorded writing
        (O(nsnet's own files), never a scan of /etc/netns).  ``networks``:
        as :meth:`wanted`'s."""
        store = self.ctx.store
        recorded = store.resolv_files()
        wanted = self.wanted(store.netns_with_endpoints() | recorded, networks)
        currents = self._read_resolvs(sorted(wanted))
        out = []
        for name, text in sorted(wanted.items()):
            current = currents[name]
            if current is not None and not current.startswith(RESOLV_MARK):
                if name in recorded:  # someone else's file now: forget ours
                    out.append(name)
            elif current != text or (text is None and name in recorded):
                out.append(name)
        return out


def _read_text(dir_fd: int, path: str) -> str | None:
    """A file's text as ``open(path).read()`` gives it (symlinks followed,
    UTF-8, universal newlines), or None if it or a directory on the way is
    missing."""
    try:
        # O_NONBLOCK: a FIFO put there reads as empty instead of hanging reconcile
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    text = b"".join(chunks).decode()
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
