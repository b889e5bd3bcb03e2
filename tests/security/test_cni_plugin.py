"""Attacks on the CNI plugin's inputs and records (issue #12): forged state
records, hostile configurations, colliding container ids, plugin names that
climb out of CNI_PATH."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from cnitools import PLUGIN, REF, cni, ok


def conf(box, version: str = "1.0.0", **extra) -> dict:
    return {"cniVersion": version, "name": "cnet", "type": "nsnet", "subnet": "10.88.0.0/24",
            "stateDir": box.state_dir, "netnsDir": box.netns_dir, "hostNetns": box.host_path,
            "etcNetnsDir": box.etc_dir, **extra}


def networks(box) -> list[str]:
    return [n["name"] for n in json.loads(box.cli("network", "ls", "--json").stdout)]


@pytest.mark.attack(
    attack="forge a CNI attachment record whose bind mount names a root-owned file "
           "outside the netns directory, then send DEL (and GC)",
    promise="a DEL or GC removes only what nsnet put where it puts such things; a record "
            "never names a path to delete",
    defect="#12.8")
def test_forged_record_deletes_nothing(sandbox, tmp_path: Path) -> None:
    box = sandbox
    victim = tmp_path / "victim"
    victim.write_text("precious")
    ns = box.foreign_netns(box.name("f"))
    ok(box, "ADD", conf(box), cid="real", netns=ns)
    db = sqlite3.connect(os.path.join(box.state_dir, "state.db"))
    with db:
        for cid, netns in (("forged", "cni-forged"), ("forged2", "../../etc"),
                           ("forged3", "cni-x")):
            db.execute("INSERT INTO cni_attachments VALUES(?, ?, ?, ?, ?, ?, ?)",
                       (cid, "eth0", "cnet", netns, str(victim), "{}", 0))
    db.close()
    ok(box, "DEL", conf(box), cid="forged")
    ok(box, "DEL", conf(box), cid="forged2")
    ok(box, "GC", conf(box, "1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": "real", "ifname": "eth0"}]}))
    assert victim.read_text() == "precious"
    # the legitimate path still works
    ok(box, "CHECK", conf(box), cid="real", netns=ns)
    ok(box, "DEL", conf(box), cid="real", netns=ns)
    assert box.cli("reconcile", "--dry-run").returncode == 0


@pytest.mark.parametrize("case", [
    "deep nesting", "ipam string", "ranges strings", "runtimeConfig string",
    "portMappings empty object", "gc valid-attachments string", "bridge number",
    "dnsServers number", "agent idle abc", "ips number", "mac number", "aliases list",
])
@pytest.mark.attack(
    attack="send the plugin configurations with wrong JSON types or absurd nesting",
    promise="every bad input gets the spec's JSON error (no traceback) and changes nothing",
    defect="#12.11")
def test_bad_inputs_get_json_errors(sandbox, case: str) -> None:
    box = sandbox
    ns = box.foreign_netns(box.name("b"))
    command, env = "ADD", {}
    base = conf(box)
    config: dict | str = {
        "deep nesting": '{"cniVersion": "1.0.0", "name": "x", "args": ' + "[" * 100000
                        + "]" * 100000 + "}",
        "ipam string": dict(base, ipam="x"),
        "ranges strings": dict(base, ipam={"ranges": ["x"]}),
        "runtimeConfig string": dict(base, runtimeConfig="x"),
        "portMappings empty object": dict(base, capabilities={"portMappings": True},
                                          runtimeConfig={"portMappings": [{}]}),
        "gc valid-attachments string": dict(conf(box, "1.1.0"),
                                            **{"cni.dev/valid-attachments": "x"}),
        "bridge number": dict(base, bridge=5),
        "dnsServers number": dict(base, dnsServers=[5]),
        "agent idle abc": base,
        "ips number": dict(base, runtimeConfig={"ips": [5]}),
        "mac number": dict(base, runtimeConfig={"mac": 5}),
        "aliases list": dict(base, runtimeConfig={"aliases": ["x"]}),
    }[case]
    if case.startswith("gc"):
        command = "GC"
    if case == "agent idle abc":
        env = {"NSNET_CNI_AGENT_IDLE": "abc"}
    want = {"deep nesting": 6, "agent idle abc": 4}.get(case, 7)
    rc, out, err = cni(box, command, config, netns=ns, **env)
    assert rc != 0 and isinstance(out, dict), (out, err)
    assert out["code"] == want and out["msg"], out
    assert "Traceback" not in err, err
    assert networks(box) == []  # nothing created (runtimeConfig: "x" used to leave one)
    ok(box, "ADD", conf(box), netns=ns)  # the legitimate path still works
    ok(box, "DEL", conf(box), netns=ns)


@pytest.mark.attack(
    attack="ADD to an existing network with a configuration that differs from it (subnet, "
           "bridge, mtu, dnsServers, masquerade...)",
    promise="a differing configuration is refused with error 7 naming the keys; the "
            "network is not changed",
    defect="#12.12")
def test_differing_config_refused(sandbox) -> None:
    box = sandbox
    a, b = box.foreign_netns(box.name("a")), box.foreign_netns(box.name("d"))
    ok(box, "ADD", conf(box, bridge="cnibr0", mtu=1400), cid="a", netns=a)
    before = json.loads(box.cli("network", "inspect", "cnet").stdout)[0]
    for extra, keys in (({"subnet": "10.99.0.0/24"}, ["subnet"]),
                        ({"bridge": "other0"}, ["bridge"]),
                        ({"mtu": 1300}, ["mtu"]),
                        ({"dnsServers": ["192.0.2.53"]}, ["dnsServers"]),
                        ({"masquerade": False, "icc": False}, ["masquerade", "icc"]),
                        ({"gateway": "10.88.0.254"}, ["gateway"])):
        rc, out, err = cni(box, "ADD", dict(conf(box, bridge="cnibr0", mtu=1400), **extra),
                           cid="b", netns=b)
        assert rc != 0 and out["code"] == 7, (extra, out, err)
        for key in keys:
            assert key in out["msg"], (key, out)
    after = json.loads(box.cli("network", "inspect", "cnet").stdout)[0]
    assert {k: v for k, v in after.items() if k != "endpoints"} == \
        {k: v for k, v in before.items() if k != "endpoints"}
    assert len(after["endpoints"]) == 1
    ok(box, "ADD", conf(box, bridge="cnibr0", mtu=1400), cid="b", netns=b)  # same: fine
    ok(box, "ADD", conf(box), cid="c", netns=box.foreign_netns(box.name("e")))  # unset keys
    for cid in ("a", "b", "c"):
        ok(box, "DEL", conf(box), cid=cid)


@pytest.mark.attack(
    attack="give dnsServers as numbers or non-addresses",
    promise="an upstream DNS server is an IPv4 address written as a string; anything else "
            "is error 7 (5 never becomes 0.0.0.5)",
    defect="#12.13")
def test_dns_servers_must_be_addresses(sandbox) -> None:
    box = sandbox
    ns = box.foreign_netns(box.name("s"))
    for servers in ([5], ["5"], ["example.com"], "192.0.2.1", [None], [["192.0.2.1"]]):
        rc, out, err = cni(box, "ADD", conf(box, dnsServers=servers), netns=ns)
        assert rc != 0 and out["code"] == 7, (servers, out, err)
    assert networks(box) == []
    ok(box, "ADD", conf(box, dnsServers=["192.0.2.53"]), netns=ns)
    net = json.loads(box.cli("network", "inspect", "cnet").stdout)[0]
    assert net["dns_servers"] == ["192.0.2.53"]
    ok(box, "DEL", conf(box), netns=ns)


@pytest.mark.attack(
    attack="ADD then DEL containers whose namespaces are outside the netns directory "
           "(as containerd's /proc/PID/ns/net), then look at nsnet's namespace list",
    promise="a DEL leaves no namespace record behind (nothing in ns ls, reconcile in sync)",
    defect="#12.14")
def test_add_del_leaves_no_namespace_record(sandbox, tmp_path: Path) -> None:
    from nsnet.kernel import mount_bind

    box = sandbox
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i in range(3):
        ns = box.foreign_netns(box.name(f"r{i}"))
        outside = elsewhere / f"ctr{i}"  # the runtime's own bind mount, not in netnsDir
        outside.touch()
        mount_bind(os.path.join(box.netns_dir, ns), str(outside))
        full = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NSNET_"))}
        for command in ("ADD", "DEL"):
            full.update(CNI_COMMAND=command, CNI_CONTAINERID=f"rec{i}", CNI_IFNAME="eth0",
                        CNI_PATH=REF, CNI_NETNS=str(outside))
            proc = subprocess.run(PLUGIN, input=json.dumps(conf(box)), capture_output=True,
                                  text=True, env=full, timeout=60)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        from nsnet.kernel import remove_netns

        remove_netns(str(outside))
    listed = json.loads(box.cli("ns", "ls", "--json").stdout)
    assert not [n for n in listed if n["name"].startswith("cni-")], listed
    assert box.cli("reconcile", "--dry-run").returncode == 0


@pytest.mark.attack(
    attack="ADD two containers whose ids share their first 24 characters (outside the "
           "netns directory, so nsnet bind-mounts each)",
    promise="every container id gets its own attachment; neither ADD fails nor disturbs "
            "the other",
    defect="#12.15")
def test_container_ids_sharing_a_prefix(sandbox, tmp_path: Path) -> None:
    from nsnet.kernel import mount_bind, remove_netns

    box = sandbox
    prefix = "f" * 40
    outs = []
    for i, suffix in enumerate(("aaaa", "bbbb")):
        ns = box.foreign_netns(box.name(f"p{i}"))
        outside = tmp_path / f"ctr{i}"
        outside.touch()
        mount_bind(os.path.join(box.netns_dir, ns), str(outside))
        outs.append(outside)
        full = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NSNET_"))}
        full.update(CNI_COMMAND="ADD", CNI_CONTAINERID=prefix + suffix, CNI_IFNAME="eth0",
                    CNI_PATH=REF, CNI_NETNS=str(outside))
        proc = subprocess.run(PLUGIN, input=json.dumps(conf(box)), capture_output=True,
                              text=True, env=full, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "10.88.0." in box.inside(ns, "ip", "-4", "addr", "show", "eth0").stdout
    for suffix in ("aaaa", "bbbb"):
        ok(box, "DEL", conf(box), cid=prefix + suffix)
    for outside in outs:
        remove_netns(str(outside))
    assert box.cli("reconcile", "--dry-run").returncode == 0


@pytest.mark.attack(
    attack="name a delegate IPAM plugin with a path ('../../../bin/false', an absolute "
           "path) so the plugin runs a binary outside CNI_PATH",
    promise="delegate plugins are plain names looked up in CNI_PATH only",
    defect="#12.17")
def test_ipam_type_cannot_leave_cni_path(sandbox, tmp_path: Path) -> None:
    box = sandbox
    marker = tmp_path / "RAN"
    evil = tmp_path / "evil-ipam"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    evil.chmod(stat.S_IRWXU)
    ns = box.foreign_netns(box.name("i"))
    up = "../" * 8
    for kind in (f"{up}{str(evil).lstrip('/')}", str(evil), "..", ".", "a/b", "x\0y"):
        rc, out, err = cni(box, "ADD", conf(box, ipam={"type": kind}), netns=ns)
        assert rc != 0 and out["code"] == 7, (kind, out, err)
        rc, out, err = cni(box, "DEL", conf(box, ipam={"type": kind}), netns=ns)
        assert rc != 0 and out["code"] == 7, (kind, out, err)
    assert not marker.exists()
    assert networks(box) == []
    ipam = {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": str(tmp_path / "hl")}
    ok(box, "ADD", conf(box, ipam=ipam), netns=ns)  # a plain name in CNI_PATH still works
    ok(box, "DEL", conf(box, ipam=ipam), netns=ns)
