"""The engine and its firewall driver: one transaction per operation, none
for a rejected one, and the state as the source the firewall is rebuilt from."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nsnet import AlreadyExists, ConnectOptions, FakeFirewall, InvalidInput, NetworkSpec
from nsnet import parse_ports as ports


@pytest.fixture
def fake(sandbox):
    fw = FakeFirewall()
    return sandbox.engine(firewall=fw), fw


def test_one_transaction_per_operation(sandbox, fake) -> None:
    eng, fw = fake
    eng.network_create(NetworkSpec("a", "10.1.0.0/24"))
    assert len(fw.transactions) == 1
    eng.connect("a", [sandbox.name("x")], ConnectOptions(create=True, ports=ports(["80:80"])))
    assert len(fw.transactions) == 2
    eng.connect("a", [sandbox.name("y"), sandbox.name("z")], ConnectOptions(create=True))
    assert len(fw.transactions) == 2  # icc on, nothing published: nothing to say
    eng.port_add("a", sandbox.name("y"), ports(["81:80", "82:80/udp"]))
    eng.port_rm("a", sandbox.name("y"), ports(["81:80"]))
    assert len(fw.transactions) == 4
    eng.network_rm("a", force=True)
    assert len(fw.transactions) == 5 and not fw.facts()
    assert eng.firewall_drift() == 0


def test_rejected_operations_send_nothing(sandbox, fake) -> None:
    eng, fw = fake
    eng.network_create(NetworkSpec("a", "10.1.0.0/24"))
    eng.network_create(NetworkSpec("i", "10.2.0.0/24", internal=True))
    eng.connect("a", [sandbox.name("x")], ConnectOptions(create=True, ports=ports(["80:80"])))
    sent = len(fw.transactions)
    with pytest.raises(AlreadyExists, match="already published"):
        eng.connect("a", [sandbox.name("y")], ConnectOptions(create=True,
                                                             ports=ports(["80:80"])))
    with pytest.raises(InvalidInput, match="internal"):
        eng.connect("i", [sandbox.name("y")], ConnectOptions(create=True,
                                                             ports=ports(["81:80"])))
    with pytest.raises(InvalidInput, match="one namespace"):
        eng.connect("a", ["p", "q"], ConnectOptions(create=True, ports=ports(["82:80"])))
    assert len(fw.transactions) == sent


def test_flushed_firewall_is_rebuilt_by_reconcile(sandbox, fake) -> None:
    eng, fw = fake
    eng.network_create(NetworkSpec("a", "10.1.0.0/24", icc=False))
    eng.connect("a", [sandbox.name("x")], ConnectOptions(create=True, ports=ports(["80:80"])))
    want = fw.facts()
    fw.flush()
    actions = eng.reconcile(dry_run=True)
    assert [a.kind for a in actions] == ["firewall"]
    eng.reconcile()
    assert fw.facts() == want and eng.reconcile(dry_run=True) == []


def test_failed_firewall_rolls_the_whole_connect_back(sandbox, fake) -> None:
    eng, fw = fake
    eng.network_create(NetworkSpec("a", "10.1.0.0/24"))
    before = sandbox.fingerprint()
    facts = fw.facts()
    real_apply = fw.apply

    def broken(commands):
        if any("element" in next(iter(c.values())) for c in commands):
            from nsnet import KernelError

            raise KernelError("injected nft failure")
        real_apply(commands)

    fw.apply = broken
    with pytest.raises(Exception, match="injected"):
        eng.connect("a", [sandbox.name("x")], ConnectOptions(create=True,
                                                             ports=ports(["80:80"])))
    fw.apply = real_apply
    assert sandbox.fingerprint() == before and fw.facts() == facts


# Every crash point a publishing connect passes, in order.  A hook that stops
# working, or a new point, fails test_publish_crash_points_are_these (never a skip).
PUBLISH_POINTS = ["connect:journaled", "netns:created", "connect:veths", "connect:host-up",
                  "connect:inside", "connect:applied", "connect:firewall", "connect:committed",
                  "dns:signalled"]


def _publish(sandbox, ns: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*sandbox.cli_argv(), "connect", "front", ns, "--create",
                           "-p", "8080:80", "-p", "5353:53/udp"], env=env, capture_output=True,
                          text=True)


def _ruleset(sandbox) -> list[str]:
    """nft's own listing, with the endpoints' random ids and host interface
    names replaced by their namespace: the rules' content, comparable across
    runs (sorted lines: a set's element order is not content)."""
    text = sandbox.host("nft", "list", "ruleset").stdout
    for net in json.loads(sandbox.cli("network", "ls", "--json").stdout):
        text = text.replace(net["id"], f"<net {net['name']}>")
        for ep in net["endpoints"]:
            text = text.replace(ep["id"], f"<ep {ep['netns']}>")
            text = text.replace(ep["host_ifname"], f"<veth {ep['netns']}>")
    return sorted(line.strip() for line in text.splitlines())


def test_publish_crash_points_are_these(sandbox) -> None:
    assert sandbox.cli("network", "create", "front", "--subnet", "10.5.0.0/24",
                       "--no-icc").returncode == 0
    log = os.path.join(sandbox.state_dir, "points.log")
    assert _publish(sandbox, sandbox.name("p"), sandbox.env() | {"NSNET_CRASH_LOG": log}
                    ).returncode == 0
    with open(log) as f:
        assert [line.split()[1] for line in f] == PUBLISH_POINTS


@pytest.mark.parametrize("point", range(1, len(PUBLISH_POINTS) + 1))
def test_killed_publish_leaves_the_firewall_consistent(sandbox, point) -> None:
    """SIGKILL at every crash point of a connect that publishes a port on a
    --no-icc network: afterwards the nft ruleset is, rule for rule, the one
    before (rolled back) or the one a clean connect makes (finished)."""
    assert sandbox.cli("network", "create", "front", "--subnet", "10.5.0.0/24",
                       "--no-icc").returncode == 0
    empty = sandbox.host("nft", "list", "ruleset").stdout
    log = os.path.join(sandbox.state_dir, "points.log")
    env = sandbox.env() | {"NSNET_CRASH_AT": str(point), "NSNET_CRASH_LOG": log}
    ns = sandbox.name("p")
    res = _publish(sandbox, ns, env)
    assert res.returncode == -9, f"crash point {point} not reached: {res.returncode}"
    with open(log) as f:
        assert f.read().split()[-1] == PUBLISH_POINTS[point - 1]
    out = sandbox.cli("reconcile")
    assert out.returncode == 0, out.stderr
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    assert sandbox.engine().firewall_drift() == 0
    if "8080" not in sandbox.cli("port", "ls").stdout:  # rolled back: the ruleset is as before
        assert point < PUBLISH_POINTS.index("connect:committed") + 1
        assert sandbox.host("nft", "list", "ruleset").stdout == empty
        return
    assert point >= PUBLISH_POINTS.index("connect:committed") + 1
    finished = _ruleset(sandbox)
    assert sandbox.cli("disconnect", "front", ns).returncode == 0
    assert sandbox.host("nft", "list", "ruleset").stdout == empty
    assert _publish(sandbox, ns, sandbox.env()).returncode == 0
    assert finished == _ruleset(sandbox)
