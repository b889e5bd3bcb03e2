"""The CLI as a user runs it, in a sandbox host namespace."""

import json
import os


def _ok(box, *args):
    res = box.cli(*args)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout


def test_network_lifecycle(sandbox):
    box = sandbox
    a, b, c = box.name("a"), box.name("b"), box.name("c")
    _ok(box, "network", "create", "web", "--subnet", "198.51.100.0/24", "--bridge", "brweb",
        "--mtu", "1400", "--ip-range", "198.51.100.128/25")
    out = _ok(box, "network", "ls")
    assert "web" in out and "brweb" in out and "198.51.100.0/24" in out
    _ok(box, "ns", "add", a, b)
    out = _ok(box, "connect", "web", a, b, c, "--create")
    assert f"{a} eth0 198.51.100.128/24" in out and f"{c} eth0 198.51.100.130/24" in out
    net = json.loads(_ok(box, "network", "inspect", "web"))[0]
    assert net["gateway"] == "198.51.100.1" and net["mtu"] == 1400
    assert [e["netns"] for e in net["endpoints"]] == [a, b, c]
    ns = json.loads(_ok(box, "ns", "ls", "--json"))
    assert {n["name"]: n["networks"] for n in ns}[a] == ["web"]
    out = _ok(box, "ping", a, "198.51.100.129", "-c", "2", "-i", "0.1")
    assert "2 packets transmitted, 2 received, 0% packet loss" in out
    assert "icmp_seq=1 ttl=64" in out
    out = _ok(box, "check", "web")
    assert "*** Results: 0% dropped (6/6 received)" in out
    # ns exec works like ip netns exec
    out = _ok(box, "ns", "exec", a, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert "198.51.100.128/24" in out
    mtu = box.inside(a, "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert mtu == "1400"
    _ok(box, "disconnect", "web", b)
    res = box.cli("ping", a, "198.51.100.129", "-c", "1", "-W", "0.3")
    assert res.returncode == 1 and "1 packets transmitted, 0 received" in res.stdout
    res = box.cli("network", "rm", "web")
    assert res.returncode == 5
    _ok(box, "network", "rm", "--force", "web")
    assert "brweb" not in box.host("ip", "-o", "link").stdout
    _ok(box, "ns", "rm", a, b, c)
    assert os.listdir(box.netns_dir) == []
    assert json.loads(_ok(box, "network", "ls", "--json")) == []


def test_prune_and_check_failure(sandbox):
    box = sandbox
    _ok(box, "network", "create", "keep", "--subnet", "198.51.100.0/24")
    _ok(box, "network", "create", "empty", "--subnet", "203.0.113.0/24")
    a, b = box.name("pa"), box.name("pb")
    _ok(box, "connect", "keep", a, b, "--create")
    assert _ok(box, "network", "prune").split() == ["empty"]
    # break one endpoint behind nsnet's back: check reports it and fails
    box.inside(b, "ip", "link", "set", "eth0", "down")
    res = box.cli("check", "keep")
    assert res.returncode == 1
    assert f"{a} -> X" in res.stdout and "*** Results: 100% dropped (0/2 received)" in res.stdout
    assert "unreachable" in res.stderr
