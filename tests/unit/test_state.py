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
