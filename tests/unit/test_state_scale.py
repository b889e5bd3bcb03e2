"""The store's per-operation lookups go through indexes: their cost does not
grow with the number of endpoints, namespaces or ports recorded elsewhere.
Checked on SQLite's own query plans (no root, no timing)."""

import sys
from pathlib import Path

import pytest

from nsnet.model import HANDOFF_PATH, Endpoint, Network, PortMap
from nsnet.state import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaletools import full_scans, traced_sql


def _net(i):
    return Network(f"id{i}", f"n{i}", f"br{i}", f"10.{i}.0.0/16", f"10.{i}.0.1",
                   f"10.{i}.0.0/16", 1500, float(i))


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path))
    with s.transaction():
        for i in range(3):
            s.add_network(_net(i))
            eps = [Endpoint(f"e{i}-{j}", f"n{i}", f"ns{i}-{j}", "eth0", f"v{i}-{j}",
                            f"10.{i}.{j // 250}.{j % 250 + 2}/16",
                            f"02:00:00:00:{i:02x}:{j % 250:02x}", f"10.{i}.0.1", True, float(j))
                   for j in range(300)]
            s.add_endpoints(f"id{i}", eps)
            s.add_namespaces((e.netns, f"/run/netns/{e.netns}", True) for e in eps)
        s.add_namespaces([("h1", HANDOFF_PATH, False)])
        s.add_ports([("e0-1", PortMap("tcp", "", 8080, 80))])
        s.add_resolv_files(["ns0-1", "ns1-1"])
    yield s
    s.close()


def _plans(store, fn):
    with traced_sql(store.db) as sql:
        result = fn()
    assert sql, "nothing ran"
    return result, full_scans(store.db, sql)


@pytest.mark.parametrize("what", [
    "network", "network_by_id", "namespaces", "handed_off", "endpoints_of_namespaces",
    "endpoints_by_id", "macs", "resolv_files", "published_of", "forget_idle_handoffs",
    "dns_networks", "mac_user", "used_addresses", "published_at", "host_ifnames_used"])
def test_lookups_of_one_operation_never_read_a_whole_table(store, what):
    calls = {
        "network": lambda: store.network("n1"),
        "network_by_id": lambda: store.network_by_id("id1"),
        "namespaces": lambda: store.namespaces(["ns1-5", "nope"]),
        "handed_off": lambda: store.handed_off(["h1", "ns1-5"]),
        "endpoints_of_namespaces": lambda: store.endpoints_of_namespaces(["ns1-5", "ns2-7"]),
        "endpoints_by_id": lambda: store.endpoints_by_id(["e1-5", "e2-7"]),
        "macs": lambda: store.macs("id1"),
        "resolv_files": lambda: store.resolv_files(["ns0-1", "x"]),
        "published_of": lambda: store.published_of(["e0-1"]),
        "forget_idle_handoffs": store.forget_idle_handoffs,
        "dns_networks": store.dns_networks,
        "mac_user": lambda: store.mac_user("id1", "02:00:00:00:01:05"),
        "used_addresses": lambda: store.used_addresses("id1"),
        "published_at": lambda: store.published_at([PortMap("tcp", "", 8080, 80)]),
        "host_ifnames_used": lambda: store.host_ifnames_used(["v1-5", "veth0000001"]),
    }
    _result, scans = _plans(store, calls[what])
    assert scans == []


def test_the_indexed_lookups_answer_as_the_full_reads_did(store):
    assert store.network("n1") == next(n for n in store.networks() if n.name == "n1")
    assert store.network("n1").endpoints == next(n for n in store.networks()
                                                 if n.name == "n1").endpoints
    assert len(store.network("n1").endpoints) == 300
    assert store.network("nope") is None
    assert store.namespaces(["ns1-5", "nope"]) == {"ns1-5": ("/run/netns/ns1-5", True)}
    assert store.handed_off() == {"h1"} and store.handed_off(["ns1-5"]) == set()
    assert [e.id for e in store.endpoints_of_namespaces(["ns2-7", "ns1-5"])] == ["e1-5", "e2-7"]
    assert {e.id for e in store.endpoints_by_id(["e2-7", "gone"])} == {"e2-7"}
    assert len(store.macs("id1")) == 250 and store.resolv_files(["ns0-1", "x"]) == {"ns0-1"}
    assert store.dns_networks() == {"n0", "n1", "n2"}
    assert store.host_ifnames_used(["v1-5", "v2-299", "veth0000001"]) == {"v1-5", "v2-299"}
    assert store.endpoint_counts() == {"n0": 300, "n1": 300, "n2": 300}
    assert [n.endpoints for n in store.networks(with_endpoints=False)] == [(), (), ()]
    with store.transaction():
        store.forget_idle_handoffs()  # h1 has no endpoint: forgotten
    assert store.handed_off() == set() and len(store.namespaces()) == 900


def test_many_names_are_looked_up_in_chunks(store):
    names = [f"ns{i}-{j}" for i in range(3) for j in range(300)]
    assert len(store.namespaces(names)) == 900
    assert len(store.endpoints_of_namespaces(names)) == 900


def test_the_dns_server_rereads_only_the_networks_that_changed(store):
    from nsnet.dns.server import load_zones

    known: dict = {}
    first = load_zones(store.db, [], known)
    assert set(first) == {"10.0.0.1", "10.1.0.1", "10.2.0.1"}
    with traced_sql(store.db) as sql:
        again = load_zones(store.db, [], known)
    assert not [s for s in sql if "FROM endpoints" in s]  # nothing changed: nothing read
    assert {gw: z.names for gw, z in again.items()} == {gw: z.names for gw, z in first.items()}
    with store.transaction():
        store.add_endpoints("id1", [Endpoint("new", "n1", "fresh", "eth0", "vnew", "10.1.9.9/16",
                                             "02:00:00:00:09:09", "10.1.0.1", True, 9.0)])
    with traced_sql(store.db) as sql:
        after = load_zones(store.db, [], known)
    assert [s for s in sql if "FROM endpoints" in s] == [
        next(s for s in sql if "FROM endpoints" in s and "'id1'" in s)]
    assert after["10.1.0.1"].names["fresh"] == ["10.1.9.9"]
    assert {gw: z.names for gw, z in after.items()} == {
        gw: z.names for gw, z in load_zones(store.db, []).items()}  # as a full read
    with store.transaction():
        store.remove_endpoints(["new"])
    assert "fresh" not in load_zones(store.db, [], known)["10.1.0.1"].names


def test_to_dict_is_what_asdict_said(store):
    """Network/Endpoint.to_dict build a shallow dict (asdict deep-copied every
    endpoint): the JSON of ``network inspect`` / ``ls --json`` is unchanged."""
    import dataclasses
    import json

    net = store.networks()[0]
    ep = dataclasses.replace(net.endpoints[0], aliases=("a", "b"), labels=(("k", "v"),))
    net = dataclasses.replace(net, endpoints=(ep,), labels=(("l", "1"),))
    old = dataclasses.asdict(net)
    old["aux_addresses"], old["labels"] = dict(net.aux_addresses), dict(net.labels)
    old_ep = dataclasses.asdict(ep)
    old_ep["labels"] = dict(ep.labels)
    old["endpoints"] = [old_ep]
    assert json.dumps(net.to_dict()) == json.dumps(old)
