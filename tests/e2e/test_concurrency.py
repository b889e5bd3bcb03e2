"""Many nsnet processes at once against one state: no address twice, no race."""

import json
import random
import subprocess

import pytest


def _spawn(sandbox, *args):
    # The product's default lock wait (120 s), not the sandbox's short one:
    # 100 processes queue on the lock, the last behind 99 others' start-up and
    # work, which on 2 busy cores (two test workers) can pass 30 s.
    env = dict(sandbox.env(), NSNET_LOCK_TIMEOUT="120")
    return subprocess.Popen([*sandbox.cli_argv(), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs):
    return [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]


@pytest.mark.long
def test_100_concurrent_connects(sandbox):
    assert sandbox.cli("network", "create", "c", "--subnet", "198.51.100.0/24").returncode == 0
    names = [sandbox.name(f"c{i}-") for i in range(100)]
    results = _wait([_spawn(sandbox, "connect", "c", n, "--create") for n in names])
    errors = [err for rc, _, err in results if rc]
    assert errors == []
    net = json.loads(sandbox.cli("network", "inspect", "c").stdout)[0]
    addrs = [e["address"] for e in net["endpoints"]]
    assert len(addrs) == 100 and len(set(addrs)) == 100
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    check = sandbox.cli("check", "c", timeout=300)
    assert check.returncode == 0, check.stdout[-500:]
    assert "0% dropped (9900/9900 received)" in check.stdout


def test_20_concurrent_creates_of_one_name(sandbox):
    results = _wait([_spawn(sandbox, "network", "create", "same", "--subnet",
                            f"198.18.{i}.0/24") for i in range(20)])
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1
    assert all(rc == 4 and "network 'same' already exists" in err for rc, _, err in losers)
    assert len(json.loads(sandbox.cli("network", "ls", "--json").stdout)) == 1
    assert sandbox.host("ip", "-o", "link").stdout.count("br-") == 1


def test_connect_disconnect_storm_leaves_state_equal_to_kernel(sandbox):
    assert sandbox.cli("network", "create", "s", "--subnet", "198.51.100.0/24").returncode == 0
    names = [sandbox.name(f"s{i}-") for i in range(8)]
    assert sandbox.cli("ns", "add", *names).returncode == 0
    rng = random.Random(7)
    procs = [_spawn(sandbox, rng.choice(["connect", "disconnect"]), "s",
                    *rng.sample(names, rng.randint(1, 3))) for _ in range(40)]
    for rc, _, err in _wait(procs):
        assert rc == 0 or "already connected" in err or "not connected" in err, err
        assert "Traceback" not in err
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    net = json.loads(sandbox.cli("network", "inspect", "s").stdout)[0]
    addrs = [e["address"] for e in net["endpoints"]]
    assert len(addrs) == len(set(addrs))
    host_links = sandbox.host("ip", "-o", "link").stdout
    assert host_links.count("veth") == len(net["endpoints"])
