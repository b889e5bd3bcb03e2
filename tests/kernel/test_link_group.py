"""A network's host veth ends are born in its own link group; `network rm`
deletes them with one request by that group (#15) -- and still deletes
nothing nsnet did not make, ends made before networks had groups, and ends
moved out of the group.  The group is nsnet's mark, as the alias is: a
link someone else puts into it is named by reconcile, and goes with the
group (README, Ownership).  Host = sandbox namespace."""

import os
import subprocess

import pytest

from nsnet import ConnectOptions, NetworkSpec
from nsnet import kernel as k
from nsnet.engine.networks import LINK_GROUPS


def _ends(eng, eps) -> dict[str, int]:
    """Host end name -> its link group, of those still in the host."""
    links = eng.rtnl.links_named([e.host_ifname for e in eps])
    return {name: link.group for name, link in links.items()}


def _two_networks(sandbox):
    eng = sandbox.engine()
    front = eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    back = eng.network_create(NetworkSpec("back", "203.0.113.0/24"))
    fronts = eng.connect("front", [sandbox.name(f"f{i}-") for i in range(3)],
                         ConnectOptions(create=True))
    backs = eng.connect("back", [sandbox.name(f"b{i}-") for i in range(2)],
                        ConnectOptions(create=True))
    return eng, front, back, fronts, backs


def test_each_network_has_its_own_group_and_its_ends_are_born_in_it(sandbox):
    eng, front, back, fronts, backs = _two_networks(sandbox)
    assert front.link_group != back.link_group
    for net in (front, back):
        assert LINK_GROUPS[0] <= net.link_group < LINK_GROUPS[1]
        assert eng.network(net.name).link_group == net.link_group  # recorded
    assert set(_ends(eng, fronts).values()) == {front.link_group}
    assert set(_ends(eng, backs).values()) == {back.link_group}
    assert eng.snapshot().link(front.bridge).group == 0  # the bridge is not in it
    peer = eng.snapshot(fronts[0].netns).link("eth0")
    assert peer.group == 0  # nor the inside end


def test_network_rm_deletes_its_group_and_nothing_else(sandbox):
    """An end moved out of the group by hand still goes (by name, owned);
    another network's ends, a foreign link and the host's lo stay."""
    eng, front, back, fronts, backs = _two_networks(sandbox)
    sandbox.host("ip", "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")
    sandbox.host("ip", "link", "set", fronts[0].host_ifname, "group", "default")
    eng.network_rm("front", force=True)
    assert _ends(eng, fronts) == {}
    assert set(_ends(eng, backs).values()) == {back.link_group}
    left = {lk.name for lk in eng.snapshot().links}
    assert {"lo", "fv0", "fv1", back.bridge} <= left and front.bridge not in left
    for ep in fronts:  # the namespaces stay, without their interface
        assert eng.snapshot(ep.netns).link("eth0") is None


def test_a_network_made_before_link_groups_is_removed_by_name(sandbox):
    """A network recorded without a group (made by an nsnet before #15):
    its ends are in none, and rm finds them one by one, as it did."""
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("old", "198.51.100.0/24"))
    with eng.store.transaction():
        eng.store.db.execute("UPDATE networks SET link_group=0")
    eps = eng.connect("old", [sandbox.name(f"o{i}-") for i in range(3)],
                      ConnectOptions(create=True))
    assert set(_ends(eng, eps).values()) == {0}
    eng.network_rm("old", force=True)
    assert _ends(eng, eps) == {}
    assert "veth" not in sandbox.host("ip", "-o", "link").stdout


def test_a_link_that_cannot_be_deleted_in_the_group_stops_the_group_delete(sandbox):
    """Someone put the host's lo into a network's group: the kernel refuses
    the whole group delete (lo cannot be deleted), nothing is lost, and the
    network's own ends are deleted by name instead."""
    eng, front, _back, fronts, _backs = _two_networks(sandbox)
    eng.rtnl.run([k.req_set_link("lo", group=front.link_group)])
    eng.network_rm("front", force=True)
    assert _ends(eng, fronts) == {}
    assert eng.snapshot().link("lo").group == front.link_group  # untouched


def test_a_foreign_link_given_the_group_is_named_by_reconcile_then_goes_with_it(sandbox):
    """The documented edge of the mark: someone puts their own veth into a
    network's group.  `reconcile --dry-run` names it (exit 1, "blocked")
    before anything is lost; a `network rm` then deletes it with the group,
    as it would a link given an nsnet alias.  Links outside the group stay."""
    eng, front, back, _fronts, _backs = _two_networks(sandbox)
    sandbox.host("ip", "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")
    sandbox.host("ip", "link", "add", "fw0", "type", "veth", "peer", "name", "fw1")
    sandbox.host("ip", "link", "set", "fv0", "group", str(front.link_group))
    eng.close()
    res = sandbox.cli("reconcile", "--dry-run")
    assert res.returncode == 1 and "fv0" in res.stdout + res.stderr
    assert sandbox.cli("network", "rm", "--force", "front").returncode == 0
    left = {lk.name for lk in sandbox.engine().snapshot().links}
    assert "fv0" not in left and "fv1" not in left  # the marked pair went with the group
    assert {"fw0", "fw1", back.bridge} <= left


# Every crash point a `network rm --force` of 3 endpoints passes, in order
# (no DNS server left to signal: it was the only network).
RM3_POINTS = ["delete:journaled", "delete:group", "delete:links", "delete:firewall",
              "delete:bridge", "delete:committed"]


def test_network_rm_crash_points_are_these(sandbox):
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    eng.connect("front", [sandbox.name(f"c{i}-") for i in range(3)], ConnectOptions(create=True))
    eng.close()
    log = os.path.join(sandbox.state_dir, "points.log")
    res = subprocess.run([*sandbox.cli_argv(), "network", "rm", "--force", "front"],
                         env=sandbox.env() | {"NSNET_CRASH_LOG": log}, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    with open(log) as f:
        assert [line.split()[1] for line in f] == RM3_POINTS


@pytest.mark.parametrize("point", RM3_POINTS[:-1])
def test_killed_network_rm_is_rolled_forward(sandbox, point):
    """SIGKILL at every crash point of a network rm before its commit: the
    next nsnet command finishes it -- no link, bridge or record left."""
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("front", "198.51.100.0/24"))
    eps = eng.connect("front", [sandbox.name(f"c{i}-") for i in range(3)],
                      ConnectOptions(create=True))
    eng.close()
    res = subprocess.run([*sandbox.cli_argv(), "network", "rm", "--force", "front"],
                         env=sandbox.env() | {"NSNET_CRASH_AT": point}, capture_output=True,
                         text=True)
    assert res.returncode == -9, f"crash point {point} not reached: {res.returncode}"
    out = sandbox.cli("reconcile")
    assert out.returncode == 0, out.stderr
    assert "finished an interrupted delete" in out.stdout + out.stderr
    links = sandbox.host("ip", "-o", "link").stdout
    assert "veth" not in links and "br-" not in links
    assert sandbox.cli("network", "ls", "--json").stdout.strip() == "[]"
    assert sorted(os.listdir(sandbox.netns_dir)) == sorted(e.netns for e in eps)
    assert sandbox.cli("reconcile", "--dry-run").stdout.startswith("in sync")
