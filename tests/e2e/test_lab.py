"""`nsnet lab` in a sandbox (private mount + network namespace, tmpfs /run),
checked with the article's own commands afterwards."""

import subprocess
import sys

import pytest


def _sandboxed(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script where /run/netns and the host namespace are
    throwaway: everything vanishes with the process."""
    prologue = (f"set -u; mount -t tmpfs nsnet-test /run; nsnet() {{ {sys.executable} -m "
                "nsnet.cli --state-dir /run/nsnet-state \"$@\"; }; ip link set lo up; ")
    return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                           "bash", "-c", prologue + script],
                          capture_output=True, text=True, timeout=120)


def _sections(out: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    key = ""
    for line in out.splitlines():
        if line.startswith("### "):
            key = line[4:]
            parts[key] = ""
        else:
            parts[key] = parts.get(key, "") + line + "\n"
    return parts


def test_lab_then_the_articles_commands():
    res = _sandboxed("""
        echo '### lab'; nsnet lab; echo "rc=$?"
        echo '### ip netns list'; ip netns list
        echo '### ls'; ls /run/netns/
        echo '### brctl'; brctl show mydocker0
        echo '### host route'; ip route
        echo '### ns1 route'; ip netns exec ns1 ip route
        echo '### ns1 addr'; ip netns exec ns1 ip -4 -o addr show dev eth0
        echo '### ping12'; ip netns exec ns1 ping -c 2 172.16.1.2
        echo '### ping21'; ip netns exec ns2 ping -c 2 172.16.1.1
        echo '### again'; nsnet lab; echo "rc=$?"
        echo '### down'; nsnet lab --down; echo "rc=$?"
        echo '### after'; ip netns list; ip -br link
    """)
    assert res.returncode == 0, res.stderr
    s = _sections(res.stdout)
    lab = s["lab"]
    for step in ("1. ", "2. ", "3. ", "4. ", "5. "):
        assert f"\n{step}" in "\n" + lab, lab
    assert "ns1: 1: lo state DOWN" in lab and "(routing table empty)" in lab
    assert "mydocker0" in lab and "172.16.1.254/16" in lab
    assert "172.16.0.0/16 dev mydocker0 proto kernel scope link src 172.16.1.254" in lab
    assert "default via 172.16.1.254 dev eth0" in lab
    assert lab.count("2 packets transmitted, 2 received, 0% packet loss") == 2
    assert "rc=0" in lab
    assert set(s["ip netns list"].split()) >= {"ns1", "ns2"}
    assert s["ls"].split() == ["ns1", "ns2"]
    assert "veth1" in s["brctl"] and "veth2" in s["brctl"]
    assert "172.16.0.0/16 dev mydocker0 proto kernel scope link src 172.16.1.254" in s["host route"]
    assert "default via 172.16.1.254 dev eth0" in s["ns1 route"]
    assert "172.16.0.0/16 dev eth0 proto kernel scope link src 172.16.1.1" in s["ns1 route"]
    assert "inet 172.16.1.1/16" in s["ns1 addr"]
    assert "2 packets transmitted, 2 received, 0% packet loss" in s["ping12"]
    assert "2 packets transmitted, 2 received, 0% packet loss" in s["ping21"]
    assert "already up" in s["again"] and "rc=0" in s["again"]
    assert "removed network mydocker0" in s["down"] and "removed namespaces ns1 ns2" in s["down"]
    for gone in ("ns1", "ns2", "mydocker0", "veth1", "veth2"):
        assert gone not in s["after"]


@pytest.mark.parametrize("make_foreign", [
    "ip netns add ns1",
    "ip link add mydocker0 type bridge",
    "ip link add veth2 type veth peer name vx",
])
def test_lab_refuses_foreign_objects_and_touches_nothing(make_foreign):
    res = _sandboxed(f"""
        {make_foreign}
        before=$(ip -o link; ip netns list; ls /run/netns 2>/dev/null)
        nsnet lab; echo "rc=$?"
        after=$(ip -o link; ip netns list; ls /run/netns 2>/dev/null)
        [ "$before" = "$after" ] && echo UNCHANGED
    """)
    assert "rc=4" in res.stdout, res.stdout + res.stderr
    assert "was not created by nsnet; nothing was changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert "UNCHANGED" in res.stdout


def test_lab_down_leaves_foreign_namespace():
    res = _sandboxed("""
        nsnet lab >/dev/null; echo "up=$?"
        ip netns add mine
        nsnet lab --down; echo "down=$?"
        ip netns list
    """)
    assert "up=0" in res.stdout and "down=0" in res.stdout, res.stdout + res.stderr
    assert "mine" in res.stdout and "ns1" not in res.stdout.split("down=0")[1]
