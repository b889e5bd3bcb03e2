"""The plugin's own records: which Docker network and endpoint IDs map to
which nsnet objects, which ports Docker asked to publish, and the IPAM
pools and addresses Docker holds.

One JSON file, replaced atomically (write, fsync, rename) on every change,
and an exclusive ``flock`` held for the plugin's lifetime so two plugins
never serve one state directory.  Every record that precedes a change to
nsnet carries a ``phase`` ("creating" / "deleting"), so a plugin killed
half-way rolls the creation back, or finishes the deletion, when it starts
again (see :meth:`Driver.recover`).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
from typing import Any

from nsnet import StateError

__all__ = ["PluginStore"]

_EMPTY: dict[str, dict[str, Any]] = {"networks": {}, "endpoints": {}, "pools": {}}


class PluginStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "state.json")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._lock_fd = os.open(os.path.join(directory, "lock"),
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the Docker plugin's state in {directory}: "
                             f"{exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StateError(f"another nsnet Docker plugin serves {directory}") from None
        self.data = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return copy.deepcopy(_EMPTY)
        except (OSError, ValueError) as exc:
            raise StateError(f"unreadable Docker plugin state {self.path}: {exc}") from None
        if not isinstance(data, dict) or any(not isinstance(data.get(k), dict) for k in _EMPTY):
            raise StateError(f"Docker plugin state {self.path} is not what nsnet wrote")
        return data

    def save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @property
    def networks(self) -> dict[str, dict[str, Any]]:
        return self.data["networks"]

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return self.data["endpoints"]

    @property
    def pools(self) -> dict[str, dict[str, Any]]:
        return self.data["pools"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
