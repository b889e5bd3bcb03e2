"""The engine: validate everything, then apply, undoing on error.

A package, layered (see :mod:`nsnet.engine.context` and README "Design"):
:class:`Engine` (facade.py) composes one module per resource --
namespaces, networks (with the network-driver seam), endpoints, ports,
probes -- over the typed intent journal (intents.py), the firewall and DNS
services, and the :class:`~nsnet.engine.context.Context` they share.
"""

from __future__ import annotations

from ..config import DEFAULT_ETC_NETNS_DIR, DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR
from .context import kernel_errors
from .facade import Engine
from .links import LinkEnd, P2PLink
from .networks import bridge_sysctls
from .probes import CheckResult, check_ok

__all__ = ["DEFAULT_ETC_NETNS_DIR", "DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR", "CheckResult",
           "Engine", "LinkEnd", "P2PLink", "bridge_sysctls", "check_ok", "kernel_errors"]
