"""Traffic control over rtnetlink: a tbf qdisc for link emulation (rate),
and the loopback guard of nsnet's bridges.

Delay, jitter and loss need the netem qdisc; :func:`has_netem` says whether
this kernel has it (some, like this project's machine, are built without
CONFIG_NET_SCH_NETEM), so a topology can be refused before anything is
touched instead of failing half-way.

The loopback guard is a classic-BPF filter on a bridge's clsact ingress
(:func:`req_clsact`, :func:`req_loopback_guard`): it drops every IPv4 frame
addressed to 127.0.0.0/8 entering the host through the bridge.  nsnet turns
``route_localnet`` on for its bridges (the host's 127.0.0.1 reaches
published ports by DNAT), which disarms the kernel's martian check there;
its nft guard rule closes that again, but ``nft flush ruleset`` removes the
nft rule and not the sysctl.  tc is a layer no nft command touches, lives
and dies with the bridge (no record to keep, nothing left behind), and runs
before the host's IP input; a reply to the host's own localhost connection
(de-NATed to 127.0.0.1 by then when br_netfilter runs the prerouting hooks
for bridged frames) passes by a mark that only nsnet's nft rule sets, so
after a flush the guard fails closed.  Classic BPF because it
needs nothing but CONFIG_NET_CLS_BPF (no act_gact, no flower, no bpf()
syscall), and cls_bpf's direct-action mode lets it return "drop".
"""

from __future__ import annotations

import gzip
import socket
import struct

from . import netlink as nl
from .netlink import Request, attr, attr_str, attr_u32, nested

__all__ = ["guard_program", "has_netem", "loopback_guarded", "req_clsact", "req_del_root_qdisc",
           "req_loopback_guard", "req_tbf"]

RTM_NEWQDISC, RTM_DELQDISC = 36, 37
RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_BURST = 1, 6
TC_H_ROOT = 0xFFFFFFFF
TC_H_CLSACT, TC_H_CLSACT_INGRESS, CLSACT_HANDLE = 0xFFFFFFF1, 0xFFFFFFF2, 0xFFFF0000
TCA_BPF_OPS_LEN, TCA_BPF_OPS, TCA_BPF_FLAGS = 4, 5, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003
GUARD_PREF, GUARD_HANDLE = 1, 1  # first filter of the bridge's ingress
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


def guard_program(allow_mark: int) -> bytes:
    """The classic-BPF loopback guard: frames whose skb mark has a bit of
    ``allow_mark`` pass (only nsnet's nft rule sets it, on replies to the
    host's own localhost connections, which br_netfilter has already
    de-NATed to 127.0.0.1 here; no frame from the wire carries a mark);
    other IPv4 to 127.0.0.0/8 is dropped.  cls_bpf pushes the MAC header
    back on ingress, so offsets count from it."""
    program = [
        (0x20, 0, 0, 0xFFFFF014),  # ld #mark (SKF_AD_OFF + SKF_AD_MARK: -4096 + 20)
        (0x45, 6, 0, allow_mark),  # jset #allow_mark -> pass
        (0x28, 0, 0, 12),  # ldh [12] (ethertype)
        (0x15, 0, 4, 0x0800),  # jeq #IPv4, else pass
        (0x20, 0, 0, 30),  # ld [30] (IPv4 daddr)
        (0x54, 0, 0, 0xFF000000),  # and #255.0.0.0
        (0x15, 0, 1, 0x7F000000),  # jeq #127.0.0.0, else pass
        (0x06, 0, 0, 2),  # ret #TC_ACT_SHOT
        (0x06, 0, 0, 0xFFFFFFFF),  # ret #TC_ACT_UNSPEC (on to the next filter)
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def req_clsact(index: int) -> Request:
    """Add the clsact qdisc (EEXIST if there is one already)."""
    body = TCMSG.pack(0, index, CLSACT_HANDLE, TC_H_CLSACT, 0) + attr_str(TCA_KIND, "clsact")
    return Request(RTM_NEWQDISC, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body,
                   f"add the clsact qdisc to link {index}")


def req_loopback_guard(index: int, allow_mark: int) -> Request:
    """The filter dropping IPv4 to 127.0.0.0/8 arriving on ``index`` (EEXIST
    if present); needs :func:`req_clsact` first."""
    info = (GUARD_PREF << 16) | socket.htons(ETH_P_ALL)
    ops = guard_program(allow_mark)
    opts = nested(TCA_OPTIONS, attr(TCA_BPF_OPS_LEN, struct.pack("=H", len(ops) // 8)),
                  attr(TCA_BPF_OPS, ops), attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT))
    body = TCMSG.pack(0, index, GUARD_HANDLE, TC_H_CLSACT_INGRESS, info) + \
        attr_str(TCA_KIND, "bpf") + opts
    return Request(RTM_NEWTFILTER, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body,
                   f"add the loopback guard to link {index}")


def loopback_guarded(rt: nl.Netlink, index: int, allow_mark: int) -> bool:
    """Whether link ``index`` carries nsnet's loopback guard (same program)."""
    ops = guard_program(allow_mark)
    try:
        replies = rt.dump(RTM_GETTFILTER, TCMSG.pack(0, index, 0, TC_H_CLSACT_INGRESS, 0))
    except nl.NetlinkError:
        return False  # no clsact qdisc at all
    for reply in replies:
        if reply.msg_type != RTM_NEWTFILTER:
            continue
        attrs = nl.parse_attrs(reply.body, TCMSG.size)
        if nl.cstr(attrs.get(TCA_KIND, b"")) != "bpf":
            continue
        if nl.parse_attrs(attrs.get(TCA_OPTIONS, b"")).get(TCA_BPF_OPS) == ops:
            return True
    return False
