"""Settings read from the environment, each checked: a bad value is a clear
InvalidInput (exit 2) naming the variable, never a traceback or a silent
default (``NSNET_LOCK_TIMEOUT=nan`` must not mean "wait forever")."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .errors import InvalidInput

__all__ = ["DEFAULT_ETC_NETNS_DIR", "DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR", "Config",
           "check_env_settings", "env_count", "env_seconds"]

_CRASH_LABEL = re.compile(r"^[a-z_]+:[a-z_-]+$")  # e.g. delete:committed


def env_seconds(name: str, default: float, maximum: float = 86400.0 * 365,
                env: Mapping[str, str] | None = None) -> float:
    """A finite, non-negative number of seconds from ``$name`` (unset or empty: default)."""
    text = (os.environ if env is None else env).get(name, "").strip()
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


def check_env_settings(env: Mapping[str, str] | None = None) -> None:
    """Settings read elsewhere at import time, checked where an error can
    still be reported cleanly.  NSNET_CRASH_AT (the reliability harness's
    fault injection) is a count of crash points or a point's LABEL."""
    env = os.environ if env is None else env
    text = env.get("NSNET_CRASH_AT", "").strip()
    if text and not (text.isdecimal() and text.isascii()) and not _CRASH_LABEL.match(text):
        raise InvalidInput(f"NSNET_CRASH_AT={text!r} is neither a number of crash points "
                           "nor a crash point's LABEL (e.g. NSNET_CRASH_AT=3 or "
                           "NSNET_CRASH_AT=delete:committed)")
    env_seconds("NSNET_LOCK_TIMEOUT", 120.0, env=env)
    env_seconds("NSNET_STORE_TIMEOUT", DEFAULT_STORE_TIMEOUT, env=env)


DEFAULT_STATE_DIR = "/var/lib/nsnet"
DEFAULT_NETNS_DIR = "/run/netns"  # where `ip netns` keeps its bind mounts
DEFAULT_ETC_NETNS_DIR = "/etc/netns"  # where `ip netns exec` finds per-namespace files
DEFAULT_LOCK_TIMEOUT = 120.0
# seconds per cluster store request and member (#17): how long a store
# without quorum is waited for before an overlay command is refused
DEFAULT_STORE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Config:
    """Where nsnet works, read once at the edge and passed down.

    The defaults live here and nowhere else.  :meth:`from_env` reads the
    ``NSNET_*`` variables (each checked); a CLI option or an explicit
    argument overrides them with :meth:`override`.  ``host_netns`` None
    means the caller's own namespace."""

    host_netns: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    netns_dir: str = DEFAULT_NETNS_DIR
    etc_netns_dir: str = DEFAULT_ETC_NETNS_DIR
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    store_timeout: float = DEFAULT_STORE_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        check_env_settings(env)
        return cls(host_netns=env.get("NSNET_HOST_NETNS") or None,
                   state_dir=env.get("NSNET_STATE_DIR") or DEFAULT_STATE_DIR,
                   netns_dir=env.get("NSNET_NETNS_DIR") or DEFAULT_NETNS_DIR,
                   etc_netns_dir=env.get("NSNET_ETC_NETNS_DIR") or DEFAULT_ETC_NETNS_DIR,
                   lock_timeout=env_seconds("NSNET_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT, env=env),
                   store_timeout=env_seconds("NSNET_STORE_TIMEOUT", DEFAULT_STORE_TIMEOUT,
                                             env=env))

    def override(self, **values: object) -> Config:
        """This configuration with every value that is not None replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})
