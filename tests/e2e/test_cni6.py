"""The CNI plugin with IPv6 (#16): dual-stack and IPv6-only configurations,
nsnet's own IPAM and a delegated host-local with one range set per family;
exec'd as a runtime does (tests/cnitools.py)."""

from __future__ import annotations

import json

from cnitools import cni, ok


def conf(box, name: str = "c6net", version: str = "1.1.0", **extra) -> dict:
    return {"cniVersion": version, "name": name, "type": "nsnet",
            "stateDir": box.state_dir, "netnsDir": box.netns_dir, "hostNetns": box.host_path,
            "etcNetnsDir": box.etc_dir, **extra}


def test_dual_stack_and_ipv6_only_with_own_ipam(sandbox) -> None:
    box = sandbox
    ranges = [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:89::/64"}]]
    dual = conf(box, ipam={"ranges": ranges})
    ns = box.foreign_netns(box.name("d"))
    res = ok(box, "ADD", dual, netns=ns, CNI_ARGS="IgnoreUnknown=1;IP=fd00:89::50")
    assert [(i["address"], i["gateway"]) for i in res["ips"]] == [
        ("10.89.0.2/24", "10.89.0.1"), ("fd00:89::50/64", "fd00:89::1")]
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"},
                             {"dst": "::/0", "gw": "fd00:89::1"}]
    assert res["dns"]["nameservers"] == ["10.89.0.1", "fd00:89::1"]
    ok(box, "CHECK", dict(dual, prevResult=res), netns=ns)
    assert "fd00:89::50/64" in box.inside(ns, "ip", "-6", "addr", "show", "eth0").stdout
    assert "default via fd00:89::1" in box.inside(ns, "ip", "-6", "route").stdout
    old = ok(box, "ADD", conf(box, version="0.3.1", ipam={"ranges": ranges}), cid="c2",
             netns=box.foreign_netns(box.name("o")))
    assert [i["version"] for i in old["ips"]] == ["4", "6"]
    # the same network without its IPv6 range is another configuration
    rc, out, _ = cni(box, "ADD", conf(box, subnet="10.89.0.0/24"), cid="c3",
                     netns=box.foreign_netns(box.name("x")))
    assert rc != 0 and out["code"] == 7 and "IPv6" in out["msg"]
    only6 = conf(box, name="c6only", subnet="fd00:8a::/64")
    ns6 = box.foreign_netns(box.name("s"))
    res = ok(box, "ADD", only6, netns=ns6)
    assert [i["address"] for i in res["ips"]] == ["fd00:8a::2/64"]
    assert res["routes"] == [{"dst": "::/0", "gw": "fd00:8a::1"}]
    ok(box, "CHECK", dict(only6, prevResult=res), netns=ns6)
    net = json.loads(box.cli("network", "inspect", "c6only").stdout)[0]
    assert (net["subnet"], net["subnet6"]) == ("", "fd00:8a::/64")
    for config, cid, where in ((dual, "c1", ns), (only6, "c1", ns6)):
        ok(box, "DEL", config, cid=cid, netns=where)
    assert "inet6 fd00" not in box.inside(ns, "ip", "-6", "addr").stdout
    assert box.cli("reconcile", "--dry-run").returncode == 0


def test_delegated_host_local_with_a_range_set_per_family(sandbox, tmp_path) -> None:
    box = sandbox
    ipam = {"type": "host-local", "dataDir": str(tmp_path),
            "ranges": [[{"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.40"}],
                       [{"subnet": "fd00:90::/64", "rangeStart": "fd00:90::40"}]]}
    ns = box.foreign_netns(box.name("h"))
    res = ok(box, "ADD", conf(box, ipam=ipam), netns=ns)
    assert [i["address"] for i in res["ips"]] == ["10.90.0.40/24", "fd00:90::40/64"]
    assert (tmp_path / "c6net" / "fd00:90::40").exists()
    ok(box, "DEL", conf(box, ipam=ipam), netns=ns)
    assert not (tmp_path / "c6net" / "fd00:90::40").exists()  # released
