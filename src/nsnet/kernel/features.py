"""What this kernel can do, asked of the kernel itself inside a throwaway
network namespace (never the caller's): each probe creates the object a
feature needs (a qdisc, a link of some kind, an nft table) there and the
namespace -- with everything in it -- disappears when the probe ends.

A link kind or qdisc the kernel does not know is refused with EOPNOTSUPP
("Unknown device type") or ENOENT ("Specified qdisc kind is unknown"); any
other answer (success, or EINVAL for missing parameters) means the kernel
has the feature."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from . import netlink as nl
from .netlink import Request, attr_str, attr_u32, nested
from .netns import CLONE_NEWNET, Netns, entered, setns, unshare
from .rtnl import Rtnl, _ifinfo
from .tc import NetemSpec, req_del_root_qdisc, req_netem, req_tbf

MISSING = (errno.EOPNOTSUPP, errno.ENOENT, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)
IFLA_VXLAN_ID, IFLA_GENEVE_ID, IFLA_VRF_TABLE = 1, 1, 1


@contextmanager
def throwaway_netns() -> Iterator[Netns]:
    """A fresh, unnamed network namespace that lives while the block runs
    (held only by the fd; nothing is mounted, nothing to clean up)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            setns(home)
    finally:
        os.close(home)
    ns = Netns("(probe)", f"/proc/{os.getpid()}/fd/{fd}", fd)
    try:
        yield ns
    finally:
        ns.close()


def _answer(rt: Rtnl, req: Request) -> tuple[bool, str]:
    err, detail = rt.batch([req]).errors[0]
    if err in MISSING:
        return False, detail or os.strerror(err)
    return True, ""


def _link(kind: str, *data: bytes) -> Request:
    info = [attr_str(nl.IFLA_INFO_KIND, kind)]
    if data:
        info.append(nested(nl.IFLA_INFO_DATA, *data))
    body = _ifinfo() + attr_str(nl.IFLA_IFNAME, "probe0") + nested(nl.IFLA_LINKINFO, *info)
    return Request(nl.RTM_NEWLINK, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body, f"create {kind}")


def _qdisc(kind: str) -> Request:
    from .tc import RTM_NEWQDISC, TC_H_ROOT, TCA_KIND, TCMSG

    body = TCMSG.pack(0, 1, 0x10000, TC_H_ROOT, 0) + attr_str(TCA_KIND, kind)
    return Request(RTM_NEWQDISC, nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body, f"qdisc {kind}")


LINK_KINDS = {
    "vxlan": (attr_u32(IFLA_VXLAN_ID, 42),),
    "geneve": (attr_u32(IFLA_GENEVE_ID, 42),),
    "vrf": (attr_u32(IFLA_VRF_TABLE, 42),),
    "wireguard": (), "dummy": (), "bond": (), "bridge": (), "veth": (),
}
IFLA_BR_VLAN_FILTERING = 7


def probe_netlink_features() -> dict[str, tuple[bool, str]]:
    """Qdiscs (netem, tbf, fq) on the probe namespace's loopback and link
    kinds (vxlan, geneve, vrf, wireguard, dummy, bond, bridge, veth)."""
    out: dict[str, tuple[bool, str]] = {}
    with throwaway_netns() as ns:
        with entered(ns.fd):
            rt = Rtnl()
        with rt:
            rt.run([Request(nl.RTM_NEWLINK, 0, _ifinfo(1, nl.IFF_UP, nl.IFF_UP), "lo up")])
            for kind, req in (("netem", req_netem(1, NetemSpec(delay_us=1000))),
                              ("tbf", req_tbf(1, 1_000_000)), ("fq", _qdisc("fq"))):
                out[kind] = _answer(rt, req)
                rt.batch([req_del_root_qdisc(1)])  # else the next kind is a "change"
            probes = [(kind, _link(kind, *data)) for kind, data in LINK_KINDS.items()]
            probes.append(("bridge vlan_filtering",
                           _link("bridge", nl.attr(IFLA_BR_VLAN_FILTERING, b"\1"))))
            for name, req in probes:
                out[name] = _answer(rt, req)
                rt.batch([Request(nl.RTM_DELLINK, 0,
                                  _ifinfo() + attr_str(nl.IFLA_IFNAME, "probe0"), "rm")])
    return out


def probe_qdisc(kind: str) -> bool:
    """One qdisc kind (``netem``, ``tbf``, ``fq``), probed alone."""
    req = {"netem": lambda: req_netem(1, NetemSpec(delay_us=1000)),
           "tbf": lambda: req_tbf(1, 1_000_000)}.get(kind, lambda: _qdisc(kind))()
    with throwaway_netns() as ns:
        with entered(ns.fd):
            rt = Rtnl()
        with rt:
            rt.run([Request(nl.RTM_NEWLINK, 0, _ifinfo(1, nl.IFF_UP, nl.IFF_UP), "lo up")])
            return _answer(rt, req)[0]


def probe_proc_features() -> dict[str, tuple[bool, str]]:
    """Features visible as per-namespace sysctl trees, looked at from inside
    a probe namespace (IPv6, br_netfilter's bridge-nf-call-*)."""
    with throwaway_netns() as ns, entered(ns.fd):
        ipv6 = os.path.isdir("/proc/sys/net/ipv6")
        brnf = os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")
    return {"ipv6": (ipv6, "" if ipv6 else "no /proc/sys/net/ipv6"),
            "br_netfilter": (brnf, "" if brnf else "no /proc/sys/net/bridge (module not loaded)")}
