"""Namespaces: ``ip netns``-compatible bind mounts under netns_dir.

nsnet removes only namespaces it created (recorded as owned), and a
rollback removes a namespace only while it holds nothing but ``lo``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .. import kernel as k
from ..crash import crashpoint
from ..errors import AlreadyExists, Conflict, InvalidInput, KernelError, NotFound
from ..model import Namespace
from .context import Context, Steps, kernel_errors, refusal

__all__ = ["Namespaces"]


class Namespaces:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def list(self) -> list[Namespace]:
        store, ctx = self.ctx.store, self.ctx
        known = store.namespaces()
        nets: dict[str, list[str]] = {}
        for netns, network in store.endpoint_networks():  # not whole Endpoint objects
            nets.setdefault(netns, []).append(network)
        names = set(k.list_netns(ctx.netns_dir)) | set(known)
        return [Namespace(n, ctx.ns_path(n), known.get(n, ("", False))[1],
                          tuple(nets.get(n, ()))) for n in sorted(names)]

    def owned(self, names: Iterable[str] | None = None) -> set[str]:
        return {n for n, (_, o) in self.ctx.store.namespaces(names).items() if o}

    def check_new(self, names: list[str]) -> None:
        """ns add: every name is free (all or nothing)."""
        taken = [n for n in names if os.path.lexists(self.ctx.ns_path(n))]
        if taken:
            raise AlreadyExists(refusal(taken, "already exists", "already exist", names,
                                        "created"))

    def create(self, names: list[str], sysctls: dict[str, str] | None = None,
               steps: Steps | None = None,
               taken: Callable[[str], None] | None = None) -> None:
        """Create these namespaces; the caller's rollback removes them on
        error.  A name someone else took meanwhile is reported to ``taken``
        first, so the rollback never touches it."""
        with kernel_errors(f"creating namespaces in {self.ctx.netns_dir}"):
            k.ensure_netns_dir(self.ctx.netns_dir)
            for name in names:
                try:
                    k.create_netns(self.ctx.netns_dir, name, sysctls).close()
                except FileExistsError:
                    if taken:
                        taken(name)
                    raise AlreadyExists(f"namespace {name!r} already exists") from None
                crashpoint("netns:created")
                if steps:
                    steps.advance()

    def refuse_foreign(self, names: Iterable[str]) -> None:
        """Refuse, before anything is changed, a name held by a namespace nsnet
        did not create (a record of these names only, by key)."""
        names = list(names)
        owned = self.owned(names)
        for name in names:
            if name not in owned and self.ctx.ns_exists(name):
                raise AlreadyExists(f"namespace {name!r} already exists and was not created "
                                    f"by nsnet; nothing was changed (remove it with "
                                    f"'ip netns del {name}' or work in a sandbox)")

    def check_removable(self, names: list[str]) -> None:
        """ns rm: every name exists and was created by nsnet (all or nothing)."""
        known = self.ctx.store.namespaces(names)  # these names only, by key
        missing = [n for n in names if n not in known and not self.ctx.ns_exists(n)]
        if missing:
            raise NotFound(refusal(missing, "does not exist", "do not exist", names, "removed"))
        foreign = [n for n in names if not known.get(n, ("", False))[1]]
        if foreign:
            raise Conflict(refusal(foreign, "was not created by nsnet", "were not created "
                                   "by nsnet", names, "removed") +
                           f"; nsnet never deletes those (use: ip netns del {foreign[0]})")

    def remove(self, names: tuple[str, ...] | list[str]) -> None:
        for name in names:
            k.remove_netns(self.ctx.ns_path(name))
            crashpoint("delete:netns")

    def remove_if_empty(self, name: str) -> None:
        path = self.ctx.ns_path(name)
        if k.is_netns_mount(path):
            if {lk.name for lk in self.ctx.snapshot(name).links} <= {"lo"}:
                k.remove_netns(path)
        elif os.path.isfile(path) and os.path.getsize(path) == 0:
            os.unlink(path)  # died between creating the mount point and mounting

    def restore_pristine_lo(self, name: str) -> None:
        """Rollback of a connect into an existing namespace whose lo was down
        with no address: lo down again, and the 127.0.0.1/8 that bringing it
        up added removed (the kernel keeps it on the way down)."""
        if not self.ctx.ns_exists(name):
            return
        ns = self.ctx.open_ns(name)
        try:
            with k.entered(ns.fd):
                rtnl = k.Rtnl()
            with rtnl as rt:
                lo = rt.link("lo")
                rt.batch([k.req_set_link(index=lo.index, up=False),
                          k.req_del_addr(lo.index, "127.0.0.1/8")])  # absent: harmless
        finally:
            ns.close()

    def recreate(self, name: str, sysctls: dict[str, str]) -> None:
        """Reconcile: an owned namespace that vanished (a reboot) is made again."""
        if self.ctx.ns_exists(name):
            return
        self.remove_if_empty(name)  # a stale empty mount point
        with kernel_errors(f"recreating namespace {name!r}"):
            k.ensure_netns_dir(self.ctx.netns_dir)
            k.create_netns(self.ctx.netns_dir, name, sysctls).close()

    def exec(self, name: str, argv: list[str]) -> None:
        """Replace this process by ``argv`` run inside namespace ``name``."""
        if not argv:
            raise InvalidInput("no command given (usage: nsnet ns exec NAME -- CMD...)")
        self.ctx.open_ns(name).close()
        etc = os.path.join(self.ctx.etc_netns_dir, name)
        try:
            k.exec_in_netns(self.ctx.ns_path(name), argv, etc)
        except FileNotFoundError:
            raise NotFound(f"command {argv[0]!r} not found") from None
        except OSError as exc:
            raise KernelError(f"exec in namespace {name!r}: {exc.strerror}", exc.errno) from None
