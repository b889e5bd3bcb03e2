"""The nftables driver: one JSON transaction per call, inside the host netns.

libnftables is called in-process through ctypes, as nftables' own Python
binding does (no process per transaction; a fresh context per call, created
and used while this thread sits in the host namespace, so its netlink socket
lives there).  Without the library the ``nft -j -f -`` command is used, run
from the same namespace.  A batch is atomic: it applies whole or not at all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
from typing import Any

from .. import kernel as k
from ..errors import KernelError
from ..kernel import record
from ..kernel.features import throwaway_netns
from . import Facts, content_of_listing, describe_drift, facts_of_listing
from .rules import TABLE

__all__ = ["NftablesDriver"]

NFT_CTX_OUTPUT_JSON = 1 << 4


def _load() -> Any:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_char_p
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


_LIB: Any = None


def _lib() -> Any:
    global _LIB
    if _LIB is None:
        _LIB = _load() or False
    return _LIB


class NftablesDriver:
    """Talks to the nftables of one namespace (the engine's host)."""

    def __init__(self, netns: k.Netns, use_library: bool = True) -> None:
        self.netns = netns
        self.use_library = use_library and bool(_lib())
        self.transactions = 0

    def apply(self, commands: list[dict[str, Any]]) -> None:
        if not commands:
            return
        self.transactions += 1
        batch = self._batch(commands)
        self._run(batch)
        rec = record.active()
        if rec is not None:  # --explain: the transaction, as applied
            rec.nft(os.fstat(self.netns.fd).st_ino, batch)

    def facts(self) -> Facts:
        return facts_of_listing(self._listing(self.netns))

    def drift(self, commands: list[dict[str, Any]]) -> list[str]:
        """Content drift: the live tables against the same transaction
        applied in a throwaway namespace, both listed by the kernel (see
        :mod:`nsnet.firewall`).  One extra apply and listing; called only by
        reconcile, its dry run and the sync after a rollback."""
        have = content_of_listing(self._listing(self.netns))
        with throwaway_netns() as scratch:
            if commands:
                self._run(self._batch(commands), netns=scratch)
            want = content_of_listing(self._listing(scratch))
        return describe_drift(have, want)

    def _listing(self, netns: k.Netns) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = []
        for family in ("ip", "ip6", "bridge"):  # ip6: IPv6 networks only (often absent)
            out = self._run(f"list table {family} {TABLE}", missing_ok=True, netns=netns)
            if out:
                listing += json.loads(out).get("nftables", [])
        return listing

    @staticmethod
    def _batch(commands: list[dict[str, Any]]) -> str:
        return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})

    def _run(self, text: str, missing_ok: bool = False, netns: k.Netns | None = None) -> str:
        with k.entered((netns or self.netns).fd):
            rc, out, err = self._lib_run(text) if self.use_library else self._cli_run(text)
        if rc != 0:
            if missing_ok and "No such file or directory" in err:
                return ""
            raise KernelError(f"nftables rejected nsnet's transaction: {err.strip()}")
        return out

    @staticmethod
    def _lib_run(text: str) -> tuple[int, str, str]:
        lib = _lib()
        ctx = lib.nft_ctx_new(0)
        try:
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
            return rc, out, err
        finally:
            lib.nft_ctx_free(ctx)

    @staticmethod
    def _cli_run(text: str) -> tuple[int, str, str]:
        # a JSON batch goes on stdin; a listing command (nsnet's own, fixed
        # words) as arguments, since -j makes -f parse JSON only
        json_batch = text.startswith("{")
        argv = ["nft", "-j", "-f", "-"] if json_batch else ["nft", "-j", *text.split()]
        try:
            proc = subprocess.run(argv, input=text if json_batch else None, capture_output=True,
                                  text=True, check=False)
        except FileNotFoundError:
            raise KernelError("nftables is not installed (apt-get install nftables)") from None
        return proc.returncode, proc.stdout, proc.stderr
