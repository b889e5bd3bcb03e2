"""Cost must not depend on what else exists: an operation on one endpoint,
with hundreds of others present, reads no whole table of the state, dumps no
link table, and never reads the mount table.  Counted with seams (SQLite's
query plans, the netlink dump counter, opens of mountinfo), not timed."""

import sys
from pathlib import Path

import pytest

from nsnet import ConnectOptions, NetworkSpec
from nsnet.kernel import netlink as nl
from nsnet.topology import load_topology, up

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaletools import full_scans, mountinfo_reads, traced_sql

OTHERS = 150  # endpoints of another network, present throughout


@pytest.fixture
def crowded(sandbox):
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("crowd", "198.51.100.0/24", dns=False))
    eng.network_create(NetworkSpec("mine", "203.0.113.0/24"))  # DNS on: resolv.conf path
    eng.connect("crowd", [sandbox.name(f"c{i}-") for i in range(OTHERS)],
                ConnectOptions(create=True))
    return eng


def _counted(eng, fn):
    nl.DUMPS.clear()
    with traced_sql(eng.store.db) as sql, mountinfo_reads() as mounts:
        fn()
    return full_scans(eng.store.db, sql), nl.DUMPS[nl.RTM_GETLINK], mounts


def test_connect_disconnect_and_rm_of_one_read_nothing_of_the_others(sandbox, crowded):
    eng, ns = crowded, sandbox.name("one")
    steps = [
        ("connect --create", lambda: eng.connect("mine", [ns], ConnectOptions(create=True))),
        ("port add", lambda: eng.port_add("mine", ns, (_port(),), force=True)),
        ("disconnect", lambda: eng.disconnect("mine", [ns])),
        ("connect again", lambda: eng.connect("mine", [ns])),
        ("ns rm", lambda: eng.ns_rm([ns])),
        ("network rm", lambda: eng.network_rm("mine", force=True)),
    ]
    for what, fn in steps:
        scans, link_dumps, mounts = _counted(eng, fn)
        assert scans == [], what
        assert mounts == [], what
        # only a namespace that already existed is looked at inside (its own
        # links): never the host's dump of every endpoint's host end
        assert link_dumps <= (1 if what == "connect again" else 0), what
    assert len(eng.network("crowd").endpoints) == OTHERS


def _port():
    from nsnet.model import PortMap

    return PortMap("tcp", "", 18080, 80)


def test_a_topology_up_of_a_star_reads_nothing_of_the_others(sandbox, crowded, tmp_path):
    nodes = [sandbox.name(f"s{i}-") for i in range(5)]
    path = tmp_path / "star.yaml"
    path.write_text("name: star\nnetworks:\n  hub: {subnet: 192.0.2.0/24}\nnodes:\n" +
                    "".join(f"  {n}: {{connect: [{{network: hub}}]}}\n" for n in nodes))
    scans, link_dumps, mounts = _counted(crowded, lambda: up(crowded, load_topology(str(path))))
    assert scans == [] and mounts == []
    assert link_dumps == 0  # the nodes are made by the bulk connect: nothing to look at
    assert {e.netns for e in crowded.network("hub").endpoints} == set(nodes)


def test_links_are_looked_up_by_name_without_a_dump(sandbox, crowded):
    rt = crowded.rtnl
    ends = [e.host_ifname for e in crowded.network("crowd").endpoints]
    nl.DUMPS.clear()
    found = rt.links_named([*ends, "nosuchlink0", ends[0]])
    assert set(found) == set(ends) and all(found[n].kind == "veth" for n in ends)
    assert rt.find_link("nosuchlink0") is None
    assert rt.find_link(index=found[ends[0]].index).name == ends[0]
    assert nl.DUMPS[nl.RTM_GETLINK] == 0
