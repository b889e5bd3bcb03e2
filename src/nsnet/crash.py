"""Fault injection for the reliability harness (free unless asked for).

``NSNET_CRASH_AT=N`` makes the process SIGKILL itself at the N-th crash point
it reaches (``NSNET_CRASH_AT=LABEL``: at the first point of that label);
``NSNET_CRASH_LOG=FILE`` appends "N LABEL" for each point passed.  Every
module that changes the kernel or the state in several steps calls
:func:`crashpoint` between them, so the harness can kill it there.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crashpoint"]

_AT = os.environ.get("NSNET_CRASH_AT", "") or ""
_CRASH_AT = int(_AT) if _AT.isdigit() else 0
_CRASH_LABEL = "" if _AT.isdigit() else _AT
_CRASH_LOG = os.environ.get("NSNET_CRASH_LOG")
_hits = 0


def crashpoint(label: str) -> None:
    global _hits
    if not (_CRASH_AT or _CRASH_LABEL or _CRASH_LOG):
        return
    _hits += 1
    if _CRASH_LOG:
        with open(_CRASH_LOG, "a") as f:
            f.write(f"{_hits} {label}\n")
    if _hits == _CRASH_AT or label == _CRASH_LABEL:
        os.kill(os.getpid(), signal.SIGKILL)
