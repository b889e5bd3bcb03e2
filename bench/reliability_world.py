"""Everything nsnet makes, observed from outside (iproute2, nft, /proc, the
files), normalised so two runs of the same scenario compare equal.

The reliability harness compares the world after a crash and its recovery
with the world of a clean run before and after the killed step: a leak of
any kind -- a link, a namespace or mount, an address or route, a sysctl, an
nft rule (by content), a resolv.conf, a state row, a daemon -- is a
difference.  nsnet's random ids, host interface names and MACs are replaced
by what the state says they belong to; an id the state does not claim stays
raw, so it shows up as a difference too.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from typing import Any

NETNS_DIR = "/run/netns"
# host sysctls nsnet sets (ip_forward) and per-interface ones it sets on its
# bridges and veths; inside namespaces, the IPv6 switches it flips at birth
HOST_SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"]
IF_SYSCTLS = ["net/ipv4/conf/{}/route_localnet", "net/ipv6/conf/{}/disable_ipv6",
              "net/ipv4/conf/{}/forwarding", "net/ipv6/conf/{}/accept_ra",
              "net/ipv6/conf/{}/addr_gen_mode"]
NS_SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/disable_ipv6",
              "net/ipv6/conf/default/disable_ipv6"]
STATE_TABLES = ["networks", "endpoints", "namespaces", "ports", "journal", "resolv_files",
                "cni_attachments", "topology_objects"]
DROP_COLUMNS = {"created", "id", "network_id", "endpoint_id", "mac", "host_ifname", "path",
                "link_group"}


def _run(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else ""


def _ip_json(*argv: str) -> list[dict]:
    out = _run("ip", "-j", *argv)
    return json.loads(out) if out.strip() else []


def _names(state_dir: str) -> dict[str, str]:
    """Random identifiers -> what the state says they are."""
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        nets = dict(db.execute("SELECT id, name FROM networks").fetchall())
        columns = {r[1] for r in db.execute("PRAGMA table_info(networks)")}
        groups = dict(db.execute("SELECT id, link_group FROM networks").fetchall()) \
            if "link_group" in columns else {}
        for nid, name, bridge in db.execute("SELECT id, name, bridge FROM networks"):
            out[nid] = out[nid[:16]] = out[nid[:12]] = f"<net {name}>"  # (chains, bridges)
            out[bridge] = f"<bridge {name}>"
            if groups.get(nid):  # the host ends' random link group, as ip -j shows it
                out[_ip_group(groups[nid])] = f'"group": "<group {name}>"'

        for eid, nid, ns, host, mac in db.execute(
                "SELECT id, network_id, netns, host_ifname, mac FROM endpoints"):
            who = f"{ns}@{nets.get(nid, nid)}"
            out[eid] = out[eid[:16]] = f"<ep {who}>"
            out[host] = f"<veth {who}>"
            out[mac] = f"<mac {who}>"
        return out
    finally:
        db.close()


def _ip_group(group: int) -> str:
    """A link group as it reads in the world's JSON: ``ip -j`` prints a
    group as the kernel's signed int (one >= 2^31 would read negative)."""
    signed = group - (1 << 32) if group >= 1 << 31 else group
    return f'"group": "{signed}"'


def _sysctl(path: str) -> str | None:
    try:
        with open(os.path.join("/proc/sys", path)) as f:
            return f.read().strip()
    except OSError:
        return None


def _links(links: list[dict]) -> list[dict]:
    out = []
    for lk in links:
        info = lk.get("linkinfo", {})
        out.append({"name": lk["ifname"], "kind": info.get("info_kind"),
                    "master": lk.get("master"), "alias": lk.get("ifalias"), "mtu": lk.get("mtu"),
                    "up": "UP" in lk.get("flags", []), "group": lk.get("group"),
                    "addrs": sorted(f"{a['local']}/{a['prefixlen']}"
                                    for a in lk.get("addr_info", [])
                                    if a.get("scope") != "link")})
    return sorted(out, key=lambda x: x["name"])


def _routes(routes: list[dict]) -> list[str]:
    return sorted(" ".join(f"{k}={r[k]}" for k in ("dst", "gateway", "dev", "scope", "prefsrc")
                           if k in r) for r in routes)


def _nft() -> dict[str, Any]:
    """nsnet's rules by content: per chain, the rules (order across networks
    is not content); per set and map, its elements; handles left out."""
    out = _run("nft", "-j", "list", "ruleset")
    objs = json.loads(out).get("nftables", []) if out.strip() else []
    tables: dict[str, Any] = {}
    for obj in objs:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        table = f"{body.get('family')} {body.get('table', body.get('name'))}"
        t = tables.setdefault(table, {"chains": {}, "sets": {}})
        if kind == "chain":
            t["chains"].setdefault(body["name"], {"def": body, "rules": []})["def"] = body
        elif kind == "rule":
            t["chains"].setdefault(body["chain"], {"def": None, "rules": []})["rules"].append(
                json.dumps(body, sort_keys=True))
        elif kind in ("set", "map"):
            elems = sorted(json.dumps(e, sort_keys=True) for e in body.pop("elem", []))
            t["sets"][body["name"]] = {"def": body, "elem": elems}
    for t in tables.values():
        for c in t["chains"].values():
            c["rules"].sort()
    return tables


def _dns_daemon(state_dir: str) -> bool:
    try:
        with open(os.path.join(state_dir, "dns.pid")) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _inside(ns: str) -> dict[str, Any]:
    from nsnet import kernel as k  # only for setns: the reads are plain /proc files

    links = _links(_ip_json("-n", ns, "-d", "addr", "show"))
    routes = _routes(_ip_json("-n", ns, "route", "show")) + _routes(
        [r for r in _ip_json("-n", ns, "-6", "route", "show")
         if not str(r.get("dst", "")).startswith("fe80:")])
    sysctls: dict[str, str | None] = {}
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        with k.entered(fd):
            for key in NS_SYSCTLS:
                sysctls[key] = _sysctl(key)
            for lk in links:
                sysctls[f"ipv6 off {lk['name']}"] = _sysctl(
                    f"net/ipv6/conf/{lk['name']}/disable_ipv6")
                sysctls[f"ipv6 quiet {lk['name']}"] = _sysctl(
                    f"net/ipv6/conf/{lk['name']}/accept_ra")
    finally:
        os.close(fd)
    return {"links": links, "routes": routes, "sysctls": sysctls}


def _files(root: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f)) as fh:
                out[os.path.relpath(os.path.join(d, f), root)] = fh.read()
    return out


def _state_rows(state_dir: str) -> dict[str, list]:
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for table in STATE_TABLES:
            try:
                cur = db.execute(f"SELECT * FROM {table}")  # (fixed table names)
            except sqlite3.Error:
                continue
            cols = [c[0] for c in cur.description]
            rows = sorted(json.dumps({c: v for c, v in zip(cols, row, strict=True)
                                            if c not in DROP_COLUMNS}, sort_keys=True)
                          for row in cur)
            if rows:  # (no store yet and an empty store are the same world)
                out[table] = rows
        return out
    finally:
        db.close()


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f
                      if line.split()[4].startswith(NETNS_DIR + "/"))


def world(state_dir: str, etc_dir: str, settle: float = 4.0) -> dict[str, Any]:
    """The normalised world.  A DNS server nothing wants exits after a short
    linger: wait for that (up to ``settle`` s) rather than call it a leak."""
    rows = _state_rows(state_dir)
    wants_dns = bool(rows.get("endpoints"))
    end = time.monotonic() + settle
    while not wants_dns and _dns_daemon(state_dir) and time.monotonic() < end:
        time.sleep(0.1)
    host_links = _links(_ip_json("-d", "addr", "show"))
    namespaces = sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []
    w = {
        "host": {"links": host_links, "routes": _routes(_ip_json("route", "show")) + _routes(
            [r for r in _ip_json("-6", "route", "show")
             if not str(r.get("dst", "")).startswith("fe80:")]),
                 "sysctls": {**{k: _sysctl(k) for k in HOST_SYSCTLS},
                             **{k.format(lk["name"]): _sysctl(k.format(lk["name"]))
                                for lk in host_links for k in IF_SYSCTLS}}},
        "nft": _nft(),
        "namespaces": namespaces,
        "mounts": _mounts(),
        "inside": {ns: _inside(ns) for ns in namespaces},
        "resolv.conf": _files(etc_dir) if os.path.isdir(etc_dir) else {},
        "state": rows,
        "dns daemon": _dns_daemon(state_dir),
    }
    text = json.dumps(w, sort_keys=True)
    for raw, name in sorted(_names(state_dir).items(), key=lambda x: -len(x[0])):
        if raw:
            text = text.replace(raw, name)
    return _canonical(json.loads(text))


def _canonical(value: Any) -> Any:
    """Every list in the world is a set: sorted after names were replaced."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def differences(have: dict[str, Any], want: dict[str, Any], path: str = "") -> list[str]:
    """Human-readable differences, at most a few per part."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want)):
            sub = f"{path}/{key}" if path else key
            if key not in have:
                out.append(f"{sub}: missing (a clean run has {_short(want[key])})")
            elif key not in want:
                out.append(f"{sub}: extra {_short(have[key])}")
            else:
                out += differences(have[key], want[key], sub)
        return out
    if isinstance(have, list) and isinstance(want, list) and have != want:
        extra = [x for x in have if x not in want]
        missing = [x for x in want if x not in have]
        return [f"{path}: extra {_short(extra)}, missing {_short(missing)}"]
    return [] if have == want else [f"{path}: {_short(have)} (a clean run: {_short(want)})"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 300 else text[:300] + "..."
