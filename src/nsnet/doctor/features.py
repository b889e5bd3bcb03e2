"""``nsnet doctor --kernel``: which kernel features nsnet can use here.

Every probe runs inside a throwaway network namespace (see
:mod:`nsnet.kernel.features`), never in the machine's own: creating a qdisc,
a link of a kind or an nft table there is the kernel's own answer, and the
namespace disappears with everything in it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from .. import kernel as k
from ..errors import KernelError, PermissionDenied
from ..kernel.features import probe_netlink_features, probe_proc_features, throwaway_netns


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    used_for: str  # what nsnet does with it
    disables: str  # what does not work without it
    detail: str = ""  # the kernel's refusal, when missing

    def to_dict(self) -> dict:
        return asdict(self)


# name -> (what nsnet uses it for, what is lost without it)
USES: dict[str, tuple[str, str]] = {
    "netem": ("topology link delay/jitter (netem qdisc)",
              "topology 'delay'/'jitter' are refused; rate and loss still work"),
    "tbf": ("topology link 'rate' (token bucket qdisc)", "topology 'rate' fails"),
    "vxlan": ("overlay networks across hosts (--driver overlay)", "overlay networks"),
    "nftables ip": ("NAT, published ports, isolation (table ip nsnet)",
                    "every routed network: NAT, published ports, isolation"),
    "nftables bridge": ("--no-icc (table bridge nsnet)", "--no-icc"),
    "nftables inet": ("topology 'loss' (numgen rule in the node)", "topology 'loss'"),
    "nftables ip6": ("IPv6 NAT, published ports, isolation (table ip6 nsnet)",
                     "every IPv6 network: NAT6, published ports, isolation"),
    "nftables netdev": ("nothing yet", "nothing nsnet does today"),
    "nftables arp": ("nothing yet", "nothing nsnet does today"),
    "conntrack": ("stateful filtering, NAT, published ports (ct state, dnat, masquerade)",
                  "NAT, published ports and replies to outbound traffic"),
    "nat": ("masquerade and published ports (nft nat chains)",
            "NAT and published ports"),
    "br_netfilter": ("nothing (nsnet filters bridged traffic in table bridge nsnet)",
                     "nothing: nsnet does not need it (when loaded, bridged IPv4 also "
                     "crosses the ip hooks if bridge-nf-call-iptables is 1)"),
    "ipv6": ("IPv6 on endpoints (switched off on IPv4-only networks)",
             "IPv6 networks"),
    "veth": ("every endpoint (veth pairs)", "everything: no endpoint can be connected"),
    "bridge": ("every network (Linux bridge)", "everything: no network can be created"),
    "bridge vlan_filtering": ("nothing yet (doctor checks ports' VLANs when a bridge "
                              "filters)", "nothing nsnet does today"),
    "fq": ("nothing yet (pacing)", "nothing nsnet does today"),
    "wireguard": ("nothing yet (encrypted overlay)", "nothing nsnet does today"),
    "geneve": ("nothing yet (overlay)", "nothing nsnet does today"),
    "dummy": ("nothing yet", "nothing nsnet does today"),
    "vrf": ("nothing yet", "nothing nsnet does today"),
    "bond": ("nothing yet", "nothing nsnet does today"),
}

NFT_FAMILIES = ("ip", "ip6", "inet", "bridge", "netdev", "arp")


def _nft_probe(ns: k.Netns, commands: list[dict]) -> tuple[bool, str]:
    from ..firewall.nft import NftablesDriver

    try:
        NftablesDriver(ns).apply(commands)
    except KernelError as exc:
        return False, str(exc).split(": ", 1)[-1].strip()
    return True, ""


def _table(family: str) -> dict:
    return {"add": {"table": {"family": family, "name": "probe"}}}


def _chain(family: str, name: str, ctype: str, hook: str) -> dict:
    return {"add": {"chain": {"family": family, "table": "probe", "name": name, "type": ctype,
                              "hook": hook, "prio": 0, "policy": "accept"}}}


def _rule(family: str, chain: str, expr: list) -> dict:
    return {"add": {"rule": {"family": family, "table": "probe", "chain": chain,
                             "expr": expr}}}


def probe_nft_features() -> dict[str, tuple[bool, str]]:
    """nftables families, conntrack and NAT, each in its own transaction in
    a throwaway namespace."""
    out: dict[str, tuple[bool, str]] = {}
    with throwaway_netns() as ns:
        for family in NFT_FAMILIES:
            out[f"nftables {family}"] = _nft_probe(ns, [_table(family)])
        ct = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                        "right": ["established", "related"]}}
        out["conntrack"] = _nft_probe(ns, [_table("ip"), _chain("ip", "fwd", "filter", "forward"),
                                           _rule("ip", "fwd", [ct, {"accept": None}])])
        out["nat"] = _nft_probe(ns, [_table("ip"), _chain("ip", "post", "nat", "postrouting"),
                                     _rule("ip", "post", [{"masquerade": None}])])
    return out


def kernel_features() -> list[Feature]:
    """Every feature nsnet uses or may use, probed in throwaway namespaces."""
    found: dict[str, tuple[bool, str]] = {}
    try:
        found.update(probe_netlink_features())
        found.update(probe_proc_features())
    except PermissionError:
        raise PermissionDenied("the kernel is probed inside a throwaway network namespace, "
                               "which needs root") from None
    with contextlib.suppress(FileNotFoundError):  # no nft at all: reported below
        found.update(probe_nft_features())
    for family in NFT_FAMILIES:
        found.setdefault(f"nftables {family}", (False, "nft/libnftables is not installed"))
    found.setdefault("conntrack", (False, "nft/libnftables is not installed"))
    found.setdefault("nat", (False, "nft/libnftables is not installed"))
    order = list(USES)
    return [Feature(name, ok, *USES[name], detail=detail)
            for name, (ok, detail) in sorted(found.items(), key=lambda i: order.index(i[0]))]


def missing_feature_hint() -> str:
    """The sentence refusals end with, pointing to the report."""
    return "run 'nsnet doctor --kernel' to see what this kernel supports"
