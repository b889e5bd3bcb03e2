"""The engine: validate everything, then apply, undoing on error.

A package, layered (see :mod:`nsnet.engine.context` and README "Design"):
:class:`Engine` (facade.py) composes one module per resource --
namespaces, networks (with the network-driver seam), endpoints, ports,
probes -- over the typed intent journal (intents.py), the firewall and DNS
services, and the :class:`~nsnet.engine.context.Context` they share.

Names are imported on first use (PEP 562), as the top-level package does:
``from nsnet.engine import Engine`` does not import the links and probes
resources a command may never use (see facade.py's doc).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..config import DEFAULT_ETC_NETNS_DIR, DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR

_WHERE = {
    "context": ("kernel_errors",),
    "facade": ("Engine",),
    "links": ("LinkEnd", "P2PLink"),
    "networks": ("bridge_sysctls",),
    "probes": ("CheckResult", "check_ok"),
}
__getattr__ = lazy_names(__name__, _WHERE)


if TYPE_CHECKING:  # for type checkers and readers: the same names, eagerly
    from .context import kernel_errors
    from .facade import Engine
    from .links import LinkEnd, P2PLink
    from .networks import bridge_sysctls
    from .probes import CheckResult, check_ok

__all__ = ["DEFAULT_ETC_NETNS_DIR", "DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR", "CheckResult",
           "Engine", "LinkEnd", "P2PLink", "bridge_sysctls", "check_ok", "kernel_errors"]
