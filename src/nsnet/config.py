"""Settings read from the environment, each checked: a bad value is a clear
InvalidInput (exit 2) naming the variable, never a traceback or a silent
default (``NSNET_LOCK_TIMEOUT=nan`` must not mean "wait forever")."""

from __future__ import annotations

import math
import os
import re

from .errors import InvalidInput

__all__ = ["check_env_settings", "env_count", "env_seconds"]

_CRASH_LABEL = re.compile(r"^[a-z_]+:[a-z_-]+$")  # e.g. delete:committed


def env_seconds(name: str, default: float, maximum: float = 86400.0 * 365) -> float:
    """A finite, non-negative number of seconds from ``$name`` (unset or empty: default)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise InvalidInput(f"{name}={text!r} is not a number of seconds "
                           f"(0 to {maximum:.0f}, e.g. {name}={default:g})")
    return value


def env_count(name: str, default: int = 0) -> int:
    """A non-negative whole number from ``$name`` (unset or empty: default)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdecimal() or not text.isascii():
        raise InvalidInput(f"{name}={text!r} is not a whole number (e.g. {name}=3)")
    return int(text)


def check_env_settings() -> None:
    """Settings read elsewhere at import time, checked where an error can
    still be reported cleanly.  NSNET_CRASH_AT (the reliability harness's
    fault injection) is a count of crash points or a point's LABEL."""
    text = os.environ.get("NSNET_CRASH_AT", "").strip()
    if text and not (text.isdecimal() and text.isascii()) and not _CRASH_LABEL.match(text):
        raise InvalidInput(f"NSNET_CRASH_AT={text!r} is neither a number of crash points "
                           "nor a crash point's LABEL (e.g. NSNET_CRASH_AT=3 or "
                           "NSNET_CRASH_AT=delete:committed)")
    env_seconds("NSNET_LOCK_TIMEOUT", 120.0)
