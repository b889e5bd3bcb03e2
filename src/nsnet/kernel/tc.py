"""Traffic control over rtnetlink: link emulation -- a tbf qdisc (rate) and a
netem qdisc (delay, jitter, correlation, distribution, loss, rate) -- and
the loopback guard of nsnet's bridges.

The netem request is encoded exactly as iproute2's ``tc qdisc add ... netem``
encodes it (tests/unit/golden/netem/ holds tc's own bytes, captured with
strace, and tests/unit/test_netem.py compares).  Delay, jitter and loss need
the netem qdisc; :func:`has_netem` says whether this kernel has it (some, like
this project's machine, are built without CONFIG_NET_SCH_NETEM), so a
topology can be refused before anything is touched instead of failing
half-way.

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
import os
import socket
import struct
from dataclasses import dataclass

from . import netlink as nl
from .netlink import Request, attr, attr_str, attr_u32, nested
from .record import Dev, Note

__all__ = ["NetemSpec", "bpf_bytecode", "guard_program", "has_netem", "loopback_guarded",
           "netem_from_tc_args", "read_distribution", "req_clsact", "req_del_root_qdisc",
           "req_loopback_guard", "req_netem", "req_tbf"]

RTM_NEWQDISC, RTM_DELQDISC = 36, 37
RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RTAB, TCA_TBF_BURST = 1, 2, 6
TCA_NETEM_CORR, TCA_NETEM_DELAY_DIST, TCA_NETEM_RATE, TCA_NETEM_RATE64 = 1, 2, 6, 8
TC_H_ROOT = 0xFFFFFFFF
TC_H_CLSACT, TC_H_CLSACT_INGRESS, CLSACT_HANDLE = 0xFFFFFFF1, 0xFFFFFFF2, 0xFFFF0000
TCA_BPF_OPS_LEN, TCA_BPF_OPS, TCA_BPF_FLAGS = 4, 5, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003
GUARD_PREF, GUARD_HANDLE = 1, 1  # first filter of the bridge's ingress
TC_LINKLAYER_ETHERNET = 1
TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
RATESPEC = struct.Struct("=BBHhHI")  # cell_log, linklayer, overhead, cell_align, mpu, rate
NETEM_QOPT = struct.Struct("=IIIIII")  # latency, limit, loss, gap, duplicate, jitter
NETEM_CORR = struct.Struct("=III")  # delay, loss, duplicate correlation
NETEM_RATE = struct.Struct("=IiIi")  # rate, packet_overhead, cell_size, cell_overhead
U32_MAX = 0xFFFFFFFF
# psched ticks per microsecond, as tc computes it from /proc/net/psched
# (t2us / us2t * clock_res / 1e6): 1000 / 64 * 1 on every kernel since
# 2.6.31, where PSCHED_SHIFT is 6 and the clock resolution 1 us.
TICKS_PER_US = 1000 / 64
# where iproute2 installs the distribution tables (tc's LIBDIR/tc), by distro
TC_LIB_DIRS = ("/usr/lib/tc", "/usr/lib/x86_64-linux-gnu/tc", "/usr/lib/aarch64-linux-gnu/tc",
               "/usr/lib64/tc", "/lib/tc")
MAX_DIST = 16384  # tc's limit on a table's entries


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
    def cmd() -> tuple:
        return ("tc", "qdisc", "replace", "dev", Dev(index), "root", "handle", "1:", "tbf",
                "rate", f"{rate * 8}bit", "burst", burst, "limit", limit,
                Note("the same rate, burst and limit; tc also sends its rate table"))
    return Request(RTM_NEWQDISC, nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body,
                   f"set rate {rate_bps} bit/s on link {index}", cmd)


def req_del_root_qdisc(index: int) -> Request:
    return Request(RTM_DELQDISC, 0, TCMSG.pack(0, index, 0, TC_H_ROOT, 0),
                   f"remove the root qdisc of link {index}",
                   lambda: ("tc", "qdisc", "del", "dev", Dev(index), "root"))


def has_netem() -> bool | None:
    """Whether this kernel has netem: asked of the kernel itself (a netem
    qdisc on the loopback of a throwaway namespace), else from its config;
    None if it cannot tell."""
    from .features import probe_qdisc

    try:
        return probe_qdisc("netem")
    except OSError:
        pass
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
                   f"add the clsact qdisc to link {index}",
                   lambda: ("tc", "qdisc", "add", "dev", Dev(index), "clsact"))


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
                   f"add the loopback guard to link {index}",
                   lambda: ("tc", "filter", "add", "dev", Dev(index), "ingress", "pref",
                            GUARD_PREF, "handle", GUARD_HANDLE, "protocol", "all", "bpf",
                            "direct-action", "bytecode", bpf_bytecode(ops),
                            Note("classic BPF: drop IPv4 to 127.0.0.0/8 unless the packet "
                                 f"carries mark 0x{allow_mark:x}")))


def bpf_bytecode(ops: bytes) -> str:
    """A classic-BPF program in tc's ``bytecode`` syntax (``bpf_asm -c``
    style: the count, then ``code jt jf k`` per instruction)."""
    insns = [struct.unpack_from("=HBBI", ops, off) for off in range(0, len(ops), 8)]
    return ",".join([str(len(insns))] + [" ".join(str(v) for v in i) for i in insns])


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


# ------------------------------------------------------------------- netem
@dataclass(frozen=True)
class NetemSpec:
    """One netem qdisc, in tc's units: times in microseconds, percentages as
    given to tc (``1.5`` = 1.5 %), rate in bytes per second (tc's ``rate
    10mbit`` = 1_250_000)."""

    delay_us: float = 0
    jitter_us: float = 0
    delay_corr_pct: float = 0
    distribution: str | None = None  # "normal", "pareto", ... (tc's .dist tables)
    loss_pct: float = 0
    loss_corr_pct: float = 0
    rate_Bps: int = 0  # bytes, not bits
    limit: int = 1000  # tc's default queue length, in packets


def _ticks(us: float, what: str) -> int:
    """Microseconds to psched ticks, refusing what tc refuses (too large)."""
    whole = int(us)  # tc keeps time in whole microseconds first
    if int(whole * TICKS_PER_US) > U32_MAX:
        raise ValueError(f"netem {what} {us:g} us is too large")
    return int(whole * TICKS_PER_US)


def _percent(pct: float) -> int:
    """tc's get_percent: a fraction of 2^32 - 1, rounded to nearest even."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentage {pct:g} is not within 0..100")
    return round(pct / 100.0 * U32_MAX)


def read_distribution(name: str) -> list[int]:
    """A netem delay distribution table as tc reads it: ``NAME.dist`` in tc's
    library directory (``$TC_LIB_DIR`` first), signed 16-bit numbers
    separated by white space, ``#`` lines are comments."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad distribution name {name!r}")
    dirs = [os.environ["TC_LIB_DIR"]] if os.environ.get("TC_LIB_DIR") else []
    for directory in [*dirs, *TC_LIB_DIRS]:
        path = os.path.join(directory, f"{name}.dist")
        try:
            with open(path) as f:
                lines = [ln for ln in f if not ln.lstrip().startswith("#")]
        except FileNotFoundError:
            continue
        values = [int(v) for ln in lines for v in ln.split()]
        if len(values) > MAX_DIST:
            raise ValueError(f"{path}: more than {MAX_DIST} entries")
        return values
    raise ValueError(f"no netem distribution table {name}.dist (iproute2 installs them "
                     f"under {' or '.join(TC_LIB_DIRS[:2])})")


def netem_options(spec: NetemSpec) -> bytes:
    """The TCA_OPTIONS attribute of a netem qdisc, as tc builds it: the
    tc_netem_qopt struct itself is the payload, followed by the optional
    attributes (correlation, rate, distribution table) in tc's order; the
    attribute is not flagged nested."""
    if spec.distribution and not (spec.delay_us and spec.jitter_us):
        raise ValueError("a delay distribution needs a delay and a jitter")
    jitter = _ticks(spec.jitter_us, "jitter")
    qopt = NETEM_QOPT.pack(_ticks(spec.delay_us, "delay"), spec.limit,
                           _percent(spec.loss_pct), 0, 0, jitter)
    extra = []
    if spec.delay_corr_pct or spec.loss_corr_pct:
        extra.append(attr(TCA_NETEM_CORR, NETEM_CORR.pack(
            _percent(spec.delay_corr_pct), _percent(spec.loss_corr_pct), 0)))
    if spec.rate_Bps:
        rate32 = spec.rate_Bps
        if spec.rate_Bps > U32_MAX:  # the 64-bit rate goes first, the old field saturates
            extra.append(attr(TCA_NETEM_RATE64, struct.pack("=Q", spec.rate_Bps)))
            rate32 = U32_MAX
        extra.append(attr(TCA_NETEM_RATE, NETEM_RATE.pack(rate32, 0, 0, 0)))
    if spec.distribution:
        table = read_distribution(spec.distribution)
        extra.append(attr(TCA_NETEM_DELAY_DIST, struct.pack(f"={len(table)}h", *table)))
    return attr(TCA_OPTIONS, qopt + b"".join(extra))


def req_netem(index: int, spec: NetemSpec, replace: bool = True, handle: int = 0x10000
              ) -> Request:
    """The root qdisc of link ``index`` becomes netem ``spec``.  ``replace``
    False and ``handle`` 0 give exactly ``tc qdisc add dev X root netem ...``."""
    flags = nl.NLM_F_CREATE | (nl.NLM_F_REPLACE if replace else nl.NLM_F_EXCL)
    body = TCMSG.pack(0, index, handle, TC_H_ROOT, 0) + attr_str(TCA_KIND, "netem")
    return Request(RTM_NEWQDISC, flags, body + netem_options(spec),
                   f"set netem on link {index}",
                   lambda: _netem_cmd(index, spec, replace, handle))


def _netem_cmd(index: int, spec: NetemSpec, replace: bool, handle: int) -> tuple:
    """``tc qdisc add|replace dev X root [handle N:] netem ...`` (tc's own
    units: whole microseconds, percentages, bits per second)."""
    cmd: list = ["tc", "qdisc", "replace" if replace else "add", "dev", Dev(index), "root"]
    if handle:
        cmd += ["handle", f"{handle >> 16:x}:"]
    cmd.append("netem")
    if spec.delay_us or spec.jitter_us:
        cmd += ["delay", f"{int(spec.delay_us)}us"]
        if spec.jitter_us:
            cmd.append(f"{int(spec.jitter_us)}us")
            if spec.delay_corr_pct:
                cmd.append(f"{spec.delay_corr_pct:g}%")
    if spec.distribution:
        cmd += ["distribution", spec.distribution]
    if spec.loss_pct:
        cmd += ["loss", f"{spec.loss_pct:g}%"]
        if spec.loss_corr_pct:
            cmd.append(f"{spec.loss_corr_pct:g}%")
    if spec.rate_Bps:
        cmd += ["rate", f"{spec.rate_Bps * 8}bit"]
    cmd += ["limit", spec.limit]
    return tuple(cmd)


_TIME_UNITS = {"s": 1e6, "sec": 1e6, "secs": 1e6, "ms": 1e3, "msec": 1e3, "msecs": 1e3,
               "us": 1.0, "usec": 1.0, "usecs": 1.0, "": 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
               "kibit": 1024, "mibit": 1024**2, "gibit": 1024**3, "tibit": 1024**4,
               "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
               "kibps": 8 * 1024, "mibps": 8 * 1024**2, "gibps": 8 * 1024**3}


def _number_unit(text: str) -> tuple[float, str]:
    digits = len(text) - len(text.lstrip("0123456789.eE+-"))
    return float(text[:digits]), text[digits:].lower()


def parse_time_us(text: str) -> float:
    """tc's time syntax (``50ms``, ``1.5s``, ``200us``) in microseconds,
    truncated to whole microseconds as tc does."""
    value, unit = _number_unit(text)
    if unit not in _TIME_UNITS:
        raise ValueError(f"bad time {text!r}")
    return float(int(value * _TIME_UNITS[unit]))


def parse_rate_Bps(text: str) -> int:
    """tc's rate syntax (``10mbit``, ``1gbit``, ``100kbps``) in bytes/s."""
    value, unit = _number_unit(text)
    if unit not in _RATE_UNITS:
        raise ValueError(f"bad rate {text!r}")
    return int(value * _RATE_UNITS[unit] / 8)


def _is_number(word: str) -> bool:
    return bool(word) and (word[0].isdigit() or word[0] == ".")


def netem_from_tc_args(args: list[str]) -> NetemSpec:
    """The subset of ``tc ... netem`` arguments nsnet uses, parsed as tc does:
    ``delay TIME [JITTER [CORR%]] [distribution NAME] [loss PCT% [CORR%]]
    [rate RATE] [limit N]``."""
    fields: dict = {}
    words = list(args)
    while words:
        word = words.pop(0)
        if word in ("delay", "latency"):
            fields["delay_us"] = parse_time_us(words.pop(0))
            if words and _is_number(words[0]):
                fields["jitter_us"] = parse_time_us(words.pop(0))
                if words and _is_number(words[0]):
                    fields["delay_corr_pct"] = float(words.pop(0).rstrip("%"))
        elif word in ("loss", "drop"):
            if words and words[0] == "random":
                words.pop(0)
            fields["loss_pct"] = float(words.pop(0).rstrip("%"))
            if words and _is_number(words[0]):
                fields["loss_corr_pct"] = float(words.pop(0).rstrip("%"))
        elif word == "distribution":
            fields["distribution"] = words.pop(0)
        elif word == "rate":
            fields["rate_Bps"] = parse_rate_Bps(words.pop(0))
        elif word == "limit":
            fields["limit"] = int(words.pop(0))
        else:
            raise ValueError(f"netem option {word!r} is not supported")
    return NetemSpec(**fields)
