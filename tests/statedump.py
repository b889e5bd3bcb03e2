"""Dump the kernel state --explain's replay differential compares, as JSON.

Run (``python -I``, stdlib only) inside a sandbox's host namespace with the
sandbox's netns directory mounted on /run/netns (tests/e2e/test_explain.py
does both in a private mount namespace).  ``--here`` dumps the current
namespace; without it: the host, then every namespace of /run/netns, each
dumped by this script re-run there with ``ip netns exec``.

Read with the real tools (ip -j, tc -j, nft, /proc/sys), never with nsnet's
own code, so a bug in nsnet's readers cannot hide a difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def jrun(*argv: str) -> list:
    out = run(*argv).strip()
    return json.loads(out) if out else []


def links() -> dict:
    out = {}
    names = {lk["ifindex"]: lk["ifname"] for lk in jrun("ip", "-j", "link", "show")}
    for lk in jrun("ip", "-j", "-d", "link", "show"):
        info = lk.get("linkinfo", {})
        slave = info.get("info_slave_data", {})
        out[lk["ifname"]] = {
            "kind": info.get("info_kind", ""),
            "master": lk.get("master", ""),
            "up": "UP" in lk.get("flags", []),
            "mtu": lk.get("mtu"),
            "mac": lk.get("address", ""),
            "alias": lk.get("ifalias", ""),
            "group": lk.get("group", ""),
            "slave_kind": info.get("info_slave_kind", ""),
            "hairpin": slave.get("hairpin"),
            # a veth's peer, by name when it is in this namespace (an index
            # in another namespace is not comparable)
            "peer": names.get(lk.get("link_index")) if "link_netnsid" not in lk else "(other)",
        }
    return out


def addresses() -> list:
    out = []
    for lk in jrun("ip", "-j", "addr", "show"):
        for a in lk.get("addr_info", []):
            if a["family"] == "inet6" and a["local"].startswith("fe80:"):
                continue  # link-local: derived from random MACs (see the test)
            out.append([lk["ifname"], a["family"], f"{a['local']}/{a['prefixlen']}",
                        a.get("scope"), a.get("broadcast", ""), a.get("label", "")])
    return sorted(out)


def routes() -> list:
    keys = ("type", "dst", "gateway", "dev", "protocol", "scope", "prefsrc", "table", "metric")
    v4 = [[str(r.get(k, "")) for k in keys]
          for r in jrun("ip", "-4", "-j", "route", "show", "table", "all")]
    # IPv6: the main table, link-local routes aside (every IPv6 interface has one)
    v6 = [[str(r.get(k, "")) for k in keys] for r in jrun("ip", "-6", "-j", "route", "show")
          if not str(r.get("dst", "")).startswith("fe80:")]
    return sorted(v4 + v6)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def sysctls() -> dict:
    out = {"net/ipv4/ip_forward": _read("/proc/sys/net/ipv4/ip_forward")}
    for family, keys in (("ipv4", ("route_localnet", "forwarding", "rp_filter")),
                         ("ipv6", ("disable_ipv6", "accept_ra", "autoconf", "accept_dad",
                                   "addr_gen_mode", "forwarding"))):
        base = f"/proc/sys/net/{family}/conf"
        for dev in sorted(os.listdir(base)):
            for key in keys:
                path = f"{base}/{dev}/{key}"
                if os.path.exists(path):
                    out[f"net/{family}/conf/{dev}/{key}"] = _read(path)
    return out


def traffic_control(link_names: list[str]) -> dict:
    out = {"qdiscs": sorted(json.dumps(q, sort_keys=True)
                            for q in jrun("tc", "-j", "qdisc", "show")
                            if q.get("kind") not in ("noqueue",))}
    for name in link_names:
        for parent in ("ingress", "egress"):
            proc = subprocess.run(["tc", "-j", "-d", "filter", "show", "dev", name, parent],
                                  capture_output=True, text=True, check=False)
            if proc.returncode == 0 and proc.stdout.strip() not in ("", "[]"):
                out[f"{name} {parent}"] = json.loads(proc.stdout)
    return out


def here() -> dict:
    lks = links()
    return {"links": lks, "addresses": addresses(), "routes": routes(), "sysctls": sysctls(),
            "tc": traffic_control(sorted(lks)), "nft": run("nft", "list", "ruleset")}


def main() -> None:
    if sys.argv[1:] == ["--here"]:
        json.dump(here(), sys.stdout)
        return
    names = sorted(os.listdir("/run/netns"))
    state = {"namespaces": names, "host": here()}
    for name in names:
        out = run("ip", "netns", "exec", name, sys.executable, "-I", os.path.abspath(__file__),
                  "--here")
        state[f"netns {name}"] = json.loads(out)
    json.dump(state, sys.stdout)


if __name__ == "__main__":
    main()
