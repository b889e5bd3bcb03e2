"""nsnet: Docker's bridge networking, done right, in Python.

The public API: an :class:`Engine` bound to a host network namespace, the
data model it returns, and one exception tree.  The CLI uses nothing else.
"""

from __future__ import annotations

from .engine import DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR, CheckResult, Engine, check_ok
from .errors import (
    AlreadyExists,
    CheckFailed,
    Conflict,
    InvalidInput,
    KernelError,
    LockTimeout,
    NotFound,
    NsnetError,
    PermissionDenied,
    PoolExhausted,
    StateError,
)
from .firewall import FakeFirewall, FirewallDriver
from .lab import format_route, lab_down, lab_up
from .model import (
    ConnectOptions,
    Endpoint,
    Namespace,
    Network,
    NetworkSpec,
    PortMap,
    Published,
    parse_ports,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NETNS_DIR",
    "DEFAULT_STATE_DIR",
    "AlreadyExists",
    "CheckFailed",
    "CheckResult",
    "Conflict",
    "ConnectOptions",
    "Endpoint",
    "Engine",
    "FakeFirewall",
    "FirewallDriver",
    "InvalidInput",
    "KernelError",
    "LockTimeout",
    "Namespace",
    "Network",
    "NetworkSpec",
    "NotFound",
    "NsnetError",
    "PermissionDenied",
    "PoolExhausted",
    "PortMap",
    "Published",
    "StateError",
    "__version__",
    "check_ok",
    "format_route",
    "lab_down",
    "lab_up",
    "parse_ports",
]
