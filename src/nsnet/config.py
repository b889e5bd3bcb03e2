"""Settings read from the environment, each checked: a bad value is a clear
InvalidInput (exit 2) naming the variable, never a traceback or a silent
default (``NSNET_LOCK_TIMEOUT=nan`` must not mean "wait forever")."""

from __future__ import annotations

import math
import os

from .errors import InvalidInput

__all__ = ["env_count", "env_seconds"]


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
