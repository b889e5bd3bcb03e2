import threading
import time

import pytest

from nsnet.errors import AlreadyExists, LockTimeout
from nsnet.model import Endpoint, Network
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
