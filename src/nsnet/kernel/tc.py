"""Traffic control for link emulation: a tbf qdisc (rate) over rtnetlink.

Delay, jitter and loss need the netem qdisc; :func:`has_netem` says whether
this kernel has it (some, like this project's machine, are built without
CONFIG_NET_SCH_NETEM), so a topology can be refused before anything is
touched instead of failing half-way.
"""

from __future__ import annotations

import gzip
import struct

from . import netlink as nl
from .netlink import Request, attr, attr_str, attr_u32, nested

__all__ = ["has_netem", "req_del_root_qdisc", "req_tbf"]

RTM_NEWQDISC, RTM_DELQDISC = 36, 37
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_BURST = 1, 6
TC_H_ROOT = 0xFFFFFFFF
TC_LINKLAYER_ETHERNET = 1
TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
RATESPEC = struct.Struct("=BBHhHI")  # cell_log, linklayer, overhead, cell_align, mpu, rate


def _ratespec(bytes_per_s: int) -> bytes:
    return RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, -1, 0, min(bytes_per_s, 0xFFFFFFFF))


def req_tbf(index: int, rate_bps: int, latency_ms: float = 50.0) -> Request:
    """Replace the root qdisc of ``index`` with a token bucket at ``rate_bps``
    bits/s; the queue holds ``latency_ms`` worth of traffic (as tc's
    ``latency``), the bucket one MTU-sized burst or 1/100 s of traffic."""
    rate = rate_bps // 8
    burst = max(rate // 100, 3200)
    limit = burst + int(rate * latency_ms / 1000)
    buffer_ticks = int(burst * 1e9 / rate) >> 6  # psched ticks: 64 ns each
    qopt = _ratespec(rate) + RATESPEC.pack(0, 0, 0, 0, 0, 0) + struct.pack(
        "=III", limit, buffer_ticks, 0)
    opts = nested(TCA_OPTIONS, attr(TCA_TBF_PARMS, qopt), attr_u32(TCA_TBF_BURST, burst))
    body = TCMSG.pack(0, index, 0x10000, TC_H_ROOT, 0) + attr_str(TCA_KIND, "tbf") + opts
    return Request(RTM_NEWQDISC, nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body,
                   f"set rate {rate_bps} bit/s on link {index}")


def req_del_root_qdisc(index: int) -> Request:
    return Request(RTM_DELQDISC, 0, TCMSG.pack(0, index, 0, TC_H_ROOT, 0),
                   f"remove the root qdisc of link {index}")


def has_netem() -> bool | None:
    """True/False from the running kernel's config; None if it cannot tell."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith(("CONFIG_NET_SCH_NETEM=", "# CONFIG_NET_SCH_NETEM ")):
                    return line.startswith("CONFIG_NET_SCH_NETEM=")
    except OSError:
        return None
    return False
