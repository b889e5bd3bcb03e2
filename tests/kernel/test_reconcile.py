"""Reconcile, gc, recovery of interrupted operations, foreign objects."""

import os
import subprocess

import pytest

from nsnet import ConnectOptions, NetworkSpec
from nsnet.kernel import remove_netns


def _setup(sandbox):
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    eng.network_create(NetworkSpec("back", "203.0.113.0/24", bridge="brback"))
    a, b = sandbox.name("ra"), sandbox.name("rb")
    foreign = sandbox.foreign_netns(sandbox.name("rf"))
    eng.connect("front", [a, b], ConnectOptions(create=True))
    eng.connect("back", [a], ConnectOptions())
    eng.connect("front", [foreign])
    return eng, a, b, foreign


def _wipe_kernel(sandbox, eng):
    """A reboot: every namespace and every link gone, the state store intact."""
    for name in os.listdir(sandbox.netns_dir):
        remove_netns(os.path.join(sandbox.netns_dir, name))
    for link in eng.snapshot().links:
        if link.name != "lo":
            sandbox.host("ip", "link", "del", link.name, check=False)


def test_reboot_is_reconciled_with_the_same_addresses(sandbox):
    eng, a, _b, foreign = _setup(sandbox)
    before = {(e.netns, e.network): (e.address, e.mac, e.host_ifname)
              for n in eng.networks() for e in n.endpoints}
    _wipe_kernel(sandbox, eng)
    planned = eng.reconcile(dry_run=True)
    assert {x.kind for x in planned} >= {"bridge", "netns", "endpoint", "release"}
    eng.reconcile()
    assert eng.reconcile(dry_run=True) == []
    after = {(e.netns, e.network): (e.address, e.mac, e.host_ifname)
             for n in eng.networks() for e in n.endpoints}
    # the foreign namespace is gone for good: its lease is released
    assert after == {k: v for k, v in before.items() if k[0] != foreign}
    assert all(r.ok for r in eng.check())
    assert eng.snapshot(a).link("eth1") is not None
    assert eng.snapshot(a).link("eth0").mac == before[(a, "front")][1]


def test_broken_endpoint_is_repaired(sandbox):
    eng, _a, b, _ = _setup(sandbox)
    sandbox.inside(b, "ip", "addr", "flush", "dev", "eth0")
    sandbox.host("ip", "link", "del", "brback")
    actions = eng.reconcile()
    assert {x.kind for x in actions} == {"bridge", "endpoint"}
    assert eng.reconcile(dry_run=True) == []
    assert all(r.ok for r in eng.check())


BREAKAGES = [
    [("ip", "link", "set", "eth0", "down")],
    [("ip", "route", "del", "default")],
    [("ip", "link", "set", "eth0", "name", "eth9")],
    [("ip", "addr", "del", "ADDR", "dev", "eth0")],
    # the address still in the namespace, but on another link (eth0 keeps
    # another address of the subnet, so the default route stays)
    [("sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"),
     ("ip", "addr", "add", "198.51.100.250/24", "dev", "eth0"),
     ("ip", "addr", "del", "ADDR", "dev", "eth0"), ("ip", "addr", "add", "ADDR", "dev", "lo")],
]


def test_reconcile_sees_each_inside_breakage(sandbox):
    """The inside of an endpoint is read lean (its link by name, only its
    addresses, default routes): each way to break it is still seen, one
    namespace per way, and the one left alone is not reported."""
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("front", "198.51.100.0/24", dns=False))
    names = [sandbox.name(f"b{i}-") for i in range(len(BREAKAGES) + 1)]
    eps = eng.connect("front", names, ConnectOptions(create=True))
    for ep, cmds in zip(eps, BREAKAGES, strict=False):
        for cmd in cmds:
            sandbox.inside(ep.netns, *[ep.address if w == "ADDR" else w for w in cmd])
    planned = {x.target.split("/")[0] for x in eng.reconcile(dry_run=True)
               if x.kind == "endpoint"}
    assert planned == set(names[:-1])


def test_gc_removes_marked_orphans_only(sandbox):
    eng, *_ = _setup(sandbox)
    sandbox.host("ip", "link", "add", "orph0", "type", "bridge")
    sandbox.host("ip", "link", "set", "orph0", "alias", "nsnet:net:0123456789")
    sandbox.host("ip", "link", "add", "mine0", "type", "bridge")  # someone else's
    idx = eng.snapshot().link("mine0").index
    assert [str(x).split()[0] for x in eng.gc(dry_run=True)] == ["orphan"]
    eng.gc()
    names = {lk.name for lk in eng.snapshot().links}
    assert "orph0" not in names and eng.snapshot().link("mine0").index == idx
    assert eng.gc(dry_run=True) == [] and eng.reconcile(dry_run=True) == []


def test_foreign_objects_with_nsnet_names_are_untouched(sandbox):
    eng = sandbox.engine()
    sandbox.host("ip", "link", "add", "veth1", "type", "veth", "peer", "name", "veth1p")
    sandbox.host("ip", "link", "add", "mydocker0", "type", "bridge")
    sandbox.host("ip", "addr", "add", "192.0.2.1/24", "dev", "mydocker0")
    ns1 = sandbox.foreign_netns("ns1")
    before = {lk.name: lk.index for lk in eng.snapshot().links}
    addrs = sandbox.host("ip", "-4", "-o", "addr").stdout
    with pytest.raises(Exception, match="was not created by nsnet"):
        eng.network_create(NetworkSpec("x", "198.51.100.0/24", bridge="mydocker0"))
    eng.network_create(NetworkSpec("x", "198.51.100.0/24"))
    with pytest.raises(Exception, match="already exists"):
        eng.connect("x", [ns1], ConnectOptions(host_ifname="veth1"))
    eng.connect("x", [ns1])
    eng.gc()
    eng.reconcile()
    eng.network_rm("x", force=True)
    eng.gc()
    assert {lk.name: lk.index for lk in eng.snapshot().links} == before
    assert sandbox.host("ip", "-4", "-o", "addr").stdout == addrs
    assert os.path.exists(os.path.join(sandbox.netns_dir, ns1))


# Every crash point a 3-namespace connect passes, in order (checked below:
# an unreached point fails, it is never skipped).
CONNECT3_POINTS = ["connect:journaled", *["netns:created"] * 3, "connect:veths",
                   "connect:host-up", *["connect:inside"] * 3, "connect:applied",
                   "connect:committed", "dns:signalled"]


def test_connect_crash_points_are_these(sandbox):
    assert sandbox.cli("network", "create", "front", "--subnet", "198.51.100.0/24").returncode == 0
    log = os.path.join(sandbox.state_dir, "points.log")
    names = [sandbox.name(f"k{i}-") for i in range(3)]
    res = subprocess.run([*sandbox.cli_argv(), "connect", "front", *names, "--create"],
                         env=sandbox.env() | {"NSNET_CRASH_LOG": log}, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    with open(log) as f:
        assert [line.split()[1] for line in f] == CONNECT3_POINTS


@pytest.mark.parametrize("point", range(1, len(CONNECT3_POINTS) + 1))
def test_killed_connect_is_rolled_back(sandbox, point):
    """SIGKILL at every crash point of a 3-namespace connect: the next nsnet
    command rolls it back; nothing is left, nothing allocated twice."""
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    eng.close()
    log = os.path.join(sandbox.state_dir, "points.log")
    env = sandbox.env() | {"NSNET_CRASH_AT": str(point), "NSNET_CRASH_LOG": log}
    names = [sandbox.name(f"k{i}-") for i in range(3)]
    res = subprocess.run([*sandbox.cli_argv(), "connect", "front", *names, "--create"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == -9, f"crash point {point} not reached: {res.returncode}"
    with open(log) as f:
        label = f.read().split()[-1]
    out = sandbox.cli("reconcile")
    assert out.returncode == 0, out.stderr
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    if label in ("connect:committed", "dns:signalled"):  # died after the commit: work done
        # ... and what follows the commit (each resolv.conf, the DNS server) was
        # journaled with it: finished by the next command that takes the lock
        assert "finished an interrupted dns" in out.stdout, out.stdout
        assert all(os.path.exists(_resolv(sandbox, n)) for n in names)
        assert sorted(os.listdir(sandbox.netns_dir)) == sorted(names)
    else:
        assert "rolled back an interrupted connect" in out.stdout
        assert os.listdir(sandbox.netns_dir) == []
        assert "veth" not in sandbox.host("ip", "-o", "link").stdout
        ok = sandbox.cli("connect", "front", *names, "--create")  # the retry works
        assert ok.returncode == 0, ok.stderr
    assert sandbox.cli("check", "front").returncode == 0


def test_unsettleable_intent_does_not_block_other_commands(sandbox, monkeypatch):
    from nsnet import KernelError

    eng = sandbox.engine()
    with eng.store.transaction():
        eng.store.journal_add("delete", {"endpoints": [], "namespaces": [], "network": None})

    def stuck(op, payload):
        raise KernelError("deleting veth pairs: Device or resource busy")

    monkeypatch.setattr(eng, "_roll_forward_delete", stuck)
    assert eng.recover() == ["could not yet settle an interrupted delete (deleting veth pairs: "
                             "Device or resource busy)"]
    eng.network_create(NetworkSpec("still", "198.51.100.0/24"))  # not blocked
    monkeypatch.undo()
    assert eng.recover() == ["finished an interrupted delete"]
    assert eng.store.journal() == []


def _resolv(sandbox, name):
    return os.path.join(sandbox.etc_dir, name, "resolv.conf")


@pytest.mark.parametrize("then", ["any command", "reconcile", "ns rm"])
def test_disconnect_killed_after_commit_leaves_no_resolv_conf(sandbox, then):
    """SIGKILL after a disconnect's commit, before its resolv.conf is removed
    (the issue's reproduction).  The DNS work is journaled with the commit, so
    the next command finishes it; and with that journal entry gone (a store
    written by an older nsnet), reconcile still sees the stale file -- it is
    recorded as nsnet's -- and `ns rm` removes it."""
    assert sandbox.cli("network", "create", "front", "--subnet", "198.51.100.0/24").returncode == 0
    a, b = sandbox.name("da"), sandbox.name("db")
    assert sandbox.cli("connect", "front", a, b, "--create").returncode == 0
    assert os.path.exists(_resolv(sandbox, a))
    env = sandbox.env() | {"NSNET_CRASH_AT": "delete:committed"}
    res = subprocess.run([*sandbox.cli_argv(), "disconnect", "front", a], env=env,
                         capture_output=True, text=True)
    assert res.returncode == -9, res.stderr
    assert os.path.exists(_resolv(sandbox, a))  # the leak the harness must see
    if then == "any command":
        out = sandbox.cli("network", "create", "other", "--subnet", "203.0.113.0/24")
        assert "finished an interrupted dns" in out.stderr, out.stderr
    else:
        import sqlite3  # (an Engine would settle the journal on opening)

        db = sqlite3.connect(os.path.join(sandbox.state_dir, "state.db"))
        with db:
            assert db.execute("SELECT kind FROM journal").fetchall() == [("dns",)]
            db.execute("DELETE FROM journal")
        db.close()
    if then == "reconcile":
        dry = sandbox.cli("reconcile", "--dry-run")
        assert dry.returncode == 1 and f"{a}/resolv.conf" in dry.stdout, dry.stdout
        assert sandbox.cli("reconcile").returncode == 0
        assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    elif then == "ns rm":
        assert sandbox.cli("ns", "rm", a).returncode == 0
    assert not os.path.exists(_resolv(sandbox, a))
    assert os.path.exists(_resolv(sandbox, b))  # the neighbour keeps its own


def test_foreign_resolv_conf_is_never_touched_or_reported(sandbox):
    """A resolv.conf nsnet did not write, where nsnet would write one: left
    alone by connect, disconnect and reconcile, and not counted as drift."""
    assert sandbox.cli("network", "create", "front", "--subnet", "198.51.100.0/24").returncode == 0
    a = sandbox.name("fa")
    os.makedirs(os.path.dirname(_resolv(sandbox, a)))
    with open(_resolv(sandbox, a), "w") as f:
        f.write("nameserver 192.0.2.53\n")
    assert sandbox.cli("connect", "front", a, "--create").returncode == 0
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    assert sandbox.cli("disconnect", "front", a).returncode == 0
    with open(_resolv(sandbox, a)) as f:
        assert f.read() == "nameserver 192.0.2.53\n"
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0


def test_bridge_sysctl_drift_is_seen_and_repaired(sandbox):
    """route_localnet on a routed network's bridge is something nsnet set:
    reconcile sees it switched off and sets it again (on that bridge only)."""
    eng = sandbox.engine()
    net = eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    key = f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet"
    read = ["cat", key]
    assert sandbox.host(*read).stdout.strip() == "1"
    sandbox.host("sysctl", "-q", "-w", f"net.ipv4.conf.{net.bridge}.route_localnet=0")
    assert [a.kind for a in eng.reconcile(dry_run=True)] == ["bridge"]
    eng.reconcile()
    assert sandbox.host(*read).stdout.strip() == "1"
    assert eng.reconcile(dry_run=True) == []
    assert sandbox.host("cat", "/proc/sys/net/ipv4/conf/lo/route_localnet").stdout.strip() == "0"
