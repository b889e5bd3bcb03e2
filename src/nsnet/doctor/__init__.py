"""``nsnet doctor``: why can't A reach B, and what this kernel can do.

:func:`diagnose` walks the path a packet from SRC to DST would take and
reports each hop OK or FAIL; the first failure carries the cause in one
sentence and the command that fixes it.  It reads the kernel's own answers
(route lookups with RTM_GETROUTE, bridge port state, sysctls, listening
sockets, ARP replies, nft trace events of a probe it sends itself) rather
than re-implementing them.  It changes nothing, except a temporary nft table
per namespace that marks its own probe for tracing, removed even on error.

:func:`kernel_features` says which kernel features nsnet can use here,
probed inside a throwaway namespace.
"""

from __future__ import annotations

from .features import Feature, kernel_features, missing_feature_hint
from .path import Diagnosis, Hop, diagnose

__all__ = ["Diagnosis", "Feature", "Hop", "diagnose", "kernel_features",
           "missing_feature_hint"]
