"""One exception tree for nsnet.

Every error a user can cause or meet carries an exit code; the CLI (and later
the CNI plugin) translate at the boundary: message on one line, exit with
``err.exit_code``, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CheckFailed",
    "Conflict",
    "InvalidInput",
    "KernelError",
    "LockTimeout",
    "NotFound",
    "NsnetError",
    "PermissionDenied",
    "PoolExhausted",
    "StateError",
    "StoreUnavailable",
]


class NsnetError(Exception):
    """Base of every error nsnet raises on purpose."""

    exit_code = 1


class InvalidInput(NsnetError):
    """A name, address, CIDR or option is malformed or out of range."""

    exit_code = 2


class NotFound(NsnetError):
    """A namespace, network or endpoint the caller named does not exist."""

    exit_code = 3


class AlreadyExists(NsnetError):
    """An object of that name exists already (nsnet's or someone else's)."""

    exit_code = 4


class Conflict(NsnetError):
    """The request is well-formed but clashes with current state
    (address in use, overlapping subnet, network still has endpoints...)."""

    exit_code = 5


class PoolExhausted(Conflict):
    """No free address (or bridge port) left for the request."""

    exit_code = 6


class PermissionDenied(NsnetError):
    """Not root / missing CAP_NET_ADMIN and CAP_SYS_ADMIN."""

    exit_code = 7


class KernelError(NsnetError):
    """The kernel refused an operation nsnet had validated."""

    exit_code = 8

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class StateError(NsnetError):
    """The state store is unreadable, locked by a dead format, or inconsistent."""

    exit_code = 9


class LockTimeout(StateError):
    """Another nsnet process held the lock for longer than the timeout."""

    exit_code = 10


class StoreUnavailable(StateError):
    """The cluster store (etcd) cannot answer: no member reachable, no
    leader, or quorum lost.  The message names the store."""

    exit_code = 11

    def __init__(self, message: str, store: str = "") -> None:
        super().__init__(message)
        self.store = store


class CheckFailed(NsnetError):
    """A probe (ping, check, lab) ran but some traffic did not get through."""

    exit_code = 1
