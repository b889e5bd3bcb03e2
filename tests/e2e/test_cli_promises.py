"""README promises of the CLI that no other test checked (issue #13):
``connect --json`` and ``nsnet gc``.  (Exit code 9 is in test_cli_errors.py,
the topology promises in test_topology.py.)"""

from __future__ import annotations

import json

ENDPOINT_KEYS = {"id", "network", "netns", "ifname", "host_ifname", "address", "mac",
                 "gateway", "default_route", "created", "aliases", "labels",
                 "address6", "gateway6"}  # IPv6 ("" on an IPv4-only network)


def _ok(box, *args: str) -> str:
    res = box.cli(*args)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout


def test_connect_json_is_what_was_made(sandbox) -> None:
    box = sandbox
    _ok(box, "network", "create", "web", "--subnet", "198.51.100.0/28", "--no-dns")
    a, b = box.name("ja"), box.name("jb")
    out = json.loads(_ok(box, "connect", "web", a, b, "--create", "--json", "--alias", "api"))
    assert isinstance(out, list) and [e["netns"] for e in out] == [a, b]
    assert all(set(e) == ENDPOINT_KEYS for e in out), out
    assert [e["address"] for e in out] == ["198.51.100.2/28", "198.51.100.3/28"]
    assert all(e["address6"] == e["gateway6"] == "" for e in out), out
    assert all(e["network"] == "web" and e["gateway"] == "198.51.100.1" and e["ifname"] == "eth0"
               and e["default_route"] is True and e["aliases"] == ["api"] for e in out), out
    # the same endpoints the state reports, and the kernel really has them
    recorded = json.loads(_ok(box, "network", "inspect", "web"))[0]["endpoints"]
    assert recorded == out
    host = {lk["ifname"]: lk for lk in json.loads(box.host("ip", "-j", "link").stdout)}
    for ep in out:
        assert host[ep["host_ifname"]]["ifalias"] == f"nsnet:ep:{ep['id']}"
        inside = json.loads(box.inside(ep["netns"], "ip", "-j", "addr", "show", "eth0").stdout)[0]
        assert inside["address"] == ep["mac"]
        assert [f"{i['local']}/{i['prefixlen']}" for i in inside["addr_info"]
                if i["family"] == "inet"] == [ep["address"]]
    # one more, with the static options, in the same form
    c = box.name("jc")
    (ep,) = json.loads(_ok(box, "connect", "web", c, "--create", "--json", "--ip",
                           "198.51.100.9", "--mac", "02:AA:00:00:00:09", "--ifname", "lan0"))
    assert (ep["address"], ep["mac"], ep["ifname"]) == ("198.51.100.9/28", "02:aa:00:00:00:09",
                                                        "lan0")
    # an error stays a one-line error, never half a JSON document on stdout
    res = box.cli("connect", "web", c, "--json")
    assert res.returncode == 4 and res.stdout == "" and "already connected" in res.stderr
    _ok(box, "network", "rm", "web", "--force")
    _ok(box, "ns", "rm", a, b, c)


def test_gc_removes_only_marked_orphans(sandbox) -> None:
    box = sandbox
    _ok(box, "network", "create", "live", "--subnet", "198.51.100.0/28", "--no-dns")
    a, b = box.name("ga"), box.name("gb")
    _ok(box, "connect", "live", a, b, "--create")
    # orphans: links carrying nsnet's mark that no record claims (a crash of an
    # older nsnet, a restored state file...) -- and look-alikes nsnet never made
    box.host("ip", "link", "add", "orphbr", "type", "bridge")
    box.host("ip", "link", "set", "orphbr", "alias", "nsnet:net:0123456789abcdef")
    box.host("ip", "link", "add", "orphv", "type", "veth", "peer", "name", "orphp")
    box.host("ip", "link", "set", "orphv", "alias", "nsnet:ep:fedcba9876543210")
    box.host("ip", "link", "add", "br-0123456789a", "type", "bridge")  # nsnet-like name, no mark
    box.host("ip", "link", "add", "vethfake", "type", "veth", "peer", "name", "vethfak2")
    box.host("ip", "link", "set", "vethfake", "alias", "not nsnet's")

    def links() -> set[str]:
        return {lk["ifname"] for lk in json.loads(box.host("ip", "-j", "link").stdout)}

    before = links()
    res = box.cli("gc", "--dry-run")
    assert res.returncode == 1, res.stderr
    listed = [line.split()[1].rstrip(":") for line in res.stdout.splitlines()
              if line.startswith("orphan")]
    assert sorted(listed) == ["orphbr", "orphv"], res.stdout
    assert links() == before  # a dry run removes nothing
    res = box.cli("gc")
    assert res.returncode == 0, res.stderr
    after = links()
    assert before - after == {"orphbr", "orphv", "orphp"}  # a veth's peer goes with it
    assert {"br-0123456789a", "vethfake", "vethfak2"} <= after
    # nsnet's own network is untouched and still works
    out = _ok(box, "check", "live")
    assert "0% dropped (2/2 received)" in out
    assert _ok(box, "gc").strip() == "nothing to collect"
    assert box.cli("gc", "--dry-run").returncode == 0
    _ok(box, "network", "rm", "live", "--force")
    _ok(box, "ns", "rm", a, b)



def _neighbours(box, netns: str) -> dict[str, str]:
    """IPv4 neighbour entries in NETNS: address -> state (PERMANENT, REACHABLE...)."""
    entries = json.loads(box.inside(netns, "ip", "-4", "-j", "neigh", "show").stdout or "[]")
    return {e["dst"]: (e.get("state") or ["?"])[0] for e in entries}


def _big_network(box, count: int = 17) -> tuple[list[str], list[dict]]:
    _ok(box, "network", "create", "big", "--subnet", "198.51.100.0/26", "--no-dns")
    names = [box.name(f"a{i:02d}") for i in range(count)]
    return names, json.loads(_ok(box, "connect", "big", *names, "--create", "--json"))


def _full_matrix_reached(box, count: int) -> None:
    out = json.loads(_ok(box, "check", "big", "--json"))[0]
    assert out["ok"] is True and len(out["pairs"]) == count * (count - 1), out
    assert all(p["ok"] for p in out["pairs"])  # the probes were made, and answered


def test_check_forgets_its_arp_entries_above_16_endpoints(sandbox) -> None:
    """README: on networks of more than 16 endpoints `nsnet check` forgets the
    ARP entries its probes created (the kernel's table is shared by all
    namespaces).  17 endpoints: the full matrix is still probed and reported,
    and afterwards no namespace holds an entry for another endpoint."""
    box = sandbox
    names, eps = _big_network(box)
    ips = {e["netns"]: e["address"].split("/")[0] for e in eps}
    _full_matrix_reached(box, 17)
    left = {ns: sorted(set(_neighbours(box, ns)) & (set(ips.values()) - {ips[ns]}))
            for ns in names}
    assert {ns: got for ns, got in left.items() if got} == {}, left
    _ok(box, "network", "rm", "big", "--force")
    _ok(box, "ns", "rm", *names)


def test_check_keeps_arp_entries_its_probes_did_not_create(sandbox) -> None:
    """Only the probes' entries go: a static entry an operator set stays."""
    box = sandbox
    names, eps = _big_network(box)
    first, second = eps[0], eps[1]
    ip = second["address"].split("/")[0]
    box.inside(first["netns"], "ip", "neigh", "replace", ip, "lladdr", second["mac"],
               "dev", first["ifname"], "nud", "permanent")
    try:
        _full_matrix_reached(box, 17)
        assert _neighbours(box, first["netns"]).get(ip) == "PERMANENT"
    finally:
        _ok(box, "network", "rm", "big", "--force")
        _ok(box, "ns", "rm", *names)
