import threading
import time

import pytest

from nsnet.errors import AlreadyExists, LockTimeout
from nsnet.model import Endpoint, Network, PortMap
from nsnet.state import StateLock, Store


def _net(name="n", net_id="id1", bridge="br0"):
    return Network(net_id, name, bridge, "10.0.0.0/24", "10.0.0.1", "10.0.0.0/24", 1500, 1.0)


def _ep(ep_id, netns, address, ifname="eth0", host="veth"):
    return Endpoint(ep_id, "n", netns, ifname, host + ep_id, address, "02:00:00:00:00:01",
                    "10.0.0.1", True, 2.0)


def test_roundtrip(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(_net())
        store.add_endpoints("id1", [_ep("a", "ns1", "10.0.0.2/24"), _ep("b", "ns2", "10.0.0.3/24")])
        store.add_namespaces([("ns1", "/run/netns/ns1", True)])
    net = store.network("n")
    assert net is not None and [e.netns for e in net.endpoints] == ["ns1", "ns2"]
    assert store.used_addresses("id1") == {"10.0.0.2", "10.0.0.3"}
    assert store.namespaces() == {"ns1": ("/run/netns/ns1", True)}
    store.close()
    again = Store(str(tmp_path))  # persisted
    assert again.network("n").endpoints[0].address == "10.0.0.2/24"


def test_duplicate_network_name(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(_net())
    with pytest.raises(AlreadyExists), store.transaction():
        store.add_network(_net(net_id="id2", bridge="br1"))


def test_transaction_rolls_back(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(RuntimeError), store.transaction():
        store.add_network(_net())
        raise RuntimeError
    assert store.networks() == []


def test_duplicate_address_refused_by_schema(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(_net())
    with pytest.raises(Exception, match="UNIQUE"), store.transaction():
        store.add_endpoints("id1", [_ep("a", "ns1", "10.0.0.2/24"),
                                    _ep("b", "ns2", "10.0.0.2/24")])


def test_lock_waits_says_so_and_times_out(tmp_path):
    messages = []
    holder = StateLock(str(tmp_path))
    with holder:
        waiter = StateLock(str(tmp_path), timeout=1.3, notify=messages.append)
        start = time.monotonic()
        with pytest.raises(LockTimeout, match="another nsnet is running"), waiter:
            pass
        assert time.monotonic() - start >= 1.3
    assert messages and "waiting for the state lock" in messages[0]


def test_lock_is_reentrant_and_released(tmp_path):
    lock = StateLock(str(tmp_path), timeout=0.5)
    with lock, lock:
        pass
    got = []
    t = threading.Thread(target=lambda: got.append(StateLock(str(tmp_path), 0.5).__enter__()))
    t.start()
    t.join()
    assert got


def test_a_v5_store_gains_aux_addresses_and_labels(tmp_path):
    """Issue #19 added columns (schema 6): a store written by the previous
    nsnet keeps its networks and endpoints and gets empty labels."""
    import sqlite3

    db = sqlite3.connect(str(tmp_path / "state.db"))
    db.executescript("""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES('schema', '5');
        CREATE TABLE networks(id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            bridge TEXT NOT NULL UNIQUE, subnet TEXT NOT NULL, gateway TEXT NOT NULL,
            ip_range TEXT NOT NULL, mtu INTEGER NOT NULL, created REAL NOT NULL,
            masquerade INTEGER NOT NULL DEFAULT 1, internal INTEGER NOT NULL DEFAULT 0,
            icc INTEGER NOT NULL DEFAULT 1, dns INTEGER NOT NULL DEFAULT 1,
            dns_servers TEXT NOT NULL DEFAULT '');
        CREATE TABLE endpoints(id TEXT PRIMARY KEY, network_id TEXT NOT NULL,
            netns TEXT NOT NULL, ifname TEXT NOT NULL, host_ifname TEXT NOT NULL UNIQUE,
            address TEXT NOT NULL, mac TEXT NOT NULL, default_route INTEGER NOT NULL,
            created REAL NOT NULL, aliases TEXT NOT NULL DEFAULT '');
        INSERT INTO networks VALUES('id1', 'n', 'br0', '10.0.0.0/24', '10.0.0.1',
            '10.0.0.0/24', 1500, 1.0, 1, 0, 1, 1, '');
        INSERT INTO endpoints VALUES('a', 'id1', 'ns1', 'eth0', 'veth-a', '10.0.0.2/24',
            '02:00:00:00:00:01', 1, 2.0, '');
    """)
    db.close()
    store = Store(str(tmp_path))
    net = store.network("n")
    assert net is not None and net.labels == () and net.aux_addresses == ()
    assert [(e.netns, e.labels) for e in net.endpoints] == [("ns1", ())]
    with store.transaction():
        store.add_network(Network("id2", "m", "br1", "10.1.0.0/24", "10.1.0.1", "10.1.0.0/24",
                                  1500, 3.0, aux_addresses=(("nas", "10.1.0.9"),),
                                  labels=(("tier", "db"),)))
    m = store.network("m")
    assert m is not None and dict(m.labels) == {"tier": "db"}
    assert dict(m.aux_addresses) == {"nas": "10.1.0.9"}
    store.close()


# The schema as nsnet wrote it at version 6 (before IPv6, #16), frozen here.
_SCHEMA_V6 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema', '6');
CREATE TABLE networks(
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL, gateway TEXT NOT NULL, ip_range TEXT NOT NULL, mtu INTEGER NOT NULL,
    created REAL NOT NULL, masquerade INTEGER NOT NULL DEFAULT 1,
    internal INTEGER NOT NULL DEFAULT 0, icc INTEGER NOT NULL DEFAULT 1,
    dns INTEGER NOT NULL DEFAULT 1, dns_servers TEXT NOT NULL DEFAULT '',
    aux_addresses TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '');
CREATE TABLE endpoints(
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES networks(id),
    netns TEXT NOT NULL, ifname TEXT NOT NULL, host_ifname TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL, mac TEXT NOT NULL, default_route INTEGER NOT NULL,
    created REAL NOT NULL, aliases TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '',
    UNIQUE(network_id, netns), UNIQUE(network_id, address), UNIQUE(netns, ifname));
CREATE TABLE ports(
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    proto TEXT NOT NULL, host_ip TEXT NOT NULL, host_port INTEGER NOT NULL, port INTEGER NOT NULL,
    UNIQUE(proto, host_ip, host_port));
CREATE INDEX endpoints_by_mac ON endpoints(network_id, mac);
INSERT INTO networks VALUES('id1', 'n', 'br0', '10.0.0.0/24', '10.0.0.1', '10.0.0.0/24', 1500,
    1.0, 1, 0, 1, 1, '', '', '{"tier": "web"}');
INSERT INTO endpoints VALUES('a', 'id1', 'ns1', 'eth0', 'veth-a', '10.0.0.2/24',
    '02:00:00:00:00:01', 1, 2.0, 'web', '{"k": "v"}');
INSERT INTO endpoints VALUES('b', 'id1', 'ns2', 'eth0', 'veth-b', '10.0.0.3/24',
    '02:00:00:00:00:02', 1, 3.0, '', '');
INSERT INTO ports VALUES('a', 'tcp', '', 8080, 80);
"""


def _v6_store(tmp_path):
    import sqlite3

    db = sqlite3.connect(str(tmp_path / "state.db"))
    db.executescript(_SCHEMA_V6)
    db.close()
    return Store(str(tmp_path))


def test_a_v6_store_gains_ipv6_columns_and_keeps_everything(tmp_path):
    """Schema 7 (#16): a store of the previous nsnet keeps its networks,
    endpoints and published ports (the endpoints table is rebuilt: its
    published ports must not be cascaded away), and is IPv4-only."""
    store = _v6_store(tmp_path)
    net = store.network("n")
    assert net is not None and (net.subnet6, net.gateway6, net.ipv6_mode) == ("", "", "nat")
    assert net.driver == "bridge"  # v8 (#17): every older network is a bridge network
    assert net.link_group == 0  # v9 (#15): older networks' host ends have no group
    assert dict(net.labels) == {"tier": "web"}
    assert [(e.netns, e.address, e.address6, e.gateway6, e.aliases) for e in net.endpoints] == [
        ("ns1", "10.0.0.2/24", "", "", ("web",)), ("ns2", "10.0.0.3/24", "", "", ())]
    assert [(p.endpoint, p.ip, p.ip6, p.port.host_port) for p in store.published()] == [
        ("a", "10.0.0.2", "", 8080)]
    assert store.used_addresses("id1") == {"10.0.0.2", "10.0.0.3"}
    assert store.mac_user("id1", "02:00:00:00:00:02") == "ns2"
    # the per-family uniqueness still holds, and the foreign keys are back on
    with pytest.raises(Exception, match="UNIQUE"), store.transaction():
        store.add_endpoints("id1", [_ep("c", "ns3", "10.0.0.2/24", host="vc")])
    with pytest.raises(Exception, match="FOREIGN KEY"), store.transaction():
        store.add_endpoints("nope", [_ep("d", "ns4", "10.0.0.9/24", host="vd")])
    with store.transaction():
        store.remove_endpoints(["a"])  # cascades to its port, as before
    assert store.published() == []
    store.close()
    again = Store(str(tmp_path))  # the upgrade ran once
    assert again.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "9"
    assert [e.netns for e in again.endpoints()] == ["ns2"]


def _net6(net_id="id6", name="six", bridge="br6", subnet="", gateway=""):
    return Network(net_id, name, bridge, subnet, gateway, subnet, 1500, 1.0,
                   subnet6="fd00:6::/64", gateway6="fd00:6::1", ip_range6="fd00:6::/64",
                   ipv6_mode="routed")


def _ep6(ep_id, netns, address6, address=""):
    return Endpoint(ep_id, "six", netns, "eth0", "v6" + ep_id, address, "02:00:00:00:00:01",
                    "", True, 2.0, address6=address6)


def test_ipv6_only_and_dual_stack_roundtrip(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(_net6())
        # IPv6-only: every endpoint has address '' (no v4 uniqueness clash)
        store.add_endpoints("id6", [_ep6("a", "ns1", "fd00:6::2/64"),
                                    _ep6("b", "ns2", "fd00:6::3/64")])
        store.add_ports([("a", PortMap("tcp", "::", 0, 80))])
    net = store.network("six")
    assert net.subnet6 == "fd00:6::/64" and net.ipv6_mode == "routed" and not net.has_ipv4
    assert [(e.address, e.address6, e.gateway6) for e in net.endpoints] == [
        ("", "fd00:6::2/64", "fd00:6::1"), ("", "fd00:6::3/64", "fd00:6::1")]
    assert store.used_addresses("id6") == {"fd00:6::2", "fd00:6::3"}
    pub, = store.published()
    assert (pub.ip, pub.ip6, pub.routed6) == ("", "fd00:6::2", True)
    with pytest.raises(Exception, match="UNIQUE"), store.transaction():
        store.add_endpoints("id6", [_ep6("c", "ns3", "fd00:6::2/64")])


def test_ula_global_id_is_made_once_and_kept(tmp_path):
    store = Store(str(tmp_path))
    with store.transaction():
        gid = store.ula_global_id()
    with store.transaction():
        assert store.ula_global_id() == gid
    store.close()
    with Store(str(tmp_path)).transaction() as db:
        assert db.execute("SELECT value FROM meta WHERE key='ula_global_id'").fetchone()[0] == gid
    other = Store(str(tmp_path / "other"))
    with other.transaction():
        assert other.ula_global_id() != gid  # another host (state directory): another /48


def test_namespace_ids_are_handed_out_downward_and_persist(tmp_path):
    from nsnet.state import NSID_FLOOR, NSID_TOP

    store = Store(str(tmp_path))
    with store.transaction():
        assert store.take_nsids(3) == [NSID_TOP, NSID_TOP - 1, NSID_TOP - 2]
    store.close()
    again = Store(str(tmp_path))  # each below every one handed out before, across commands
    with again.transaction():
        assert again.take_nsids(2) == [NSID_TOP - 3, NSID_TOP - 4]
        again.db.execute("UPDATE meta SET value=? WHERE key='next_nsid'", (str(NSID_FLOOR + 1),))
        assert again.take_nsids(5) == [NSID_FLOOR + 1, NSID_FLOOR]  # then the kernel's own
        assert again.take_nsids(1) == []
