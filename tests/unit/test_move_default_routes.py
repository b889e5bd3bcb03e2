"""Removing endpoints moves each namespace's default route to another
network it is still on (Docker's rule) -- with one state query for all the
namespaces, not one per namespace (a network rm of 1000 made 1000)."""

from __future__ import annotations

from types import SimpleNamespace

from nsnet.engine import endpoints as E
from nsnet.model import Endpoint, Network
from nsnet.state import Store


def _ep(ep_id, net, netns, address, created, default=True):
    return Endpoint(ep_id, net, netns, f"eth{net}", f"veth{ep_id}", address,
                    "02:00:00:00:00:01", address.rsplit(".", 1)[0] + ".1", default, created)


class _Counting(Store):
    queries = 0

    def endpoints(self, where="", args=()):
        type(self).queries += 1
        return super().endpoints(where, args)


def test_moves_to_the_oldest_other_endpoint_with_one_query(tmp_path, monkeypatch):
    store = _Counting(str(tmp_path))
    with store.transaction():
        for name, nid, sub in (("a", "ida", "10.1.0"), ("b", "idb", "10.2.0"),
                               ("c", "idc", "10.3.0")):
            store.add_network(Network(nid, name, f"br-{name}", f"{sub}.0/24", f"{sub}.1",
                                      f"{sub}.0/24", 1500, 1.0))
        store.add_endpoints("ida", [_ep(f"a{i}", "a", f"ns{i}", f"10.1.0.{i + 2}/24", 1.0)
                                    for i in range(5)])
        # ns1 and ns3 are on other networks too: b younger than c in ns1
        store.add_endpoints("idb", [_ep("b1", "b", "ns1", "10.2.0.2/24", 5.0, False),
                                    _ep("b3", "b", "ns3", "10.2.0.3/24", 2.0, False)])
        store.add_endpoints("idc", [_ep("c1", "c", "ns1", "10.3.0.2/24", 3.0, False)])
    removed = store.network("a").endpoints
    added = []
    monkeypatch.setattr(E.k, "open_rtnl", lambda ns: _Rtnl(ns, added))
    ctx = SimpleNamespace(store=store, ns_exists=lambda name: name != "ns3",
                          open_ns=lambda name: SimpleNamespace(name=name, close=lambda: None))
    _Counting.queries = 0
    moved = E.Endpoints(ctx).move_default_routes(list(removed))  # type: ignore[arg-type]
    assert _Counting.queries == 1
    assert [e.id for e in moved] == ["c1"]  # ns3's namespace is gone: nothing to move there
    assert added == [("ns1", "add route default")]


class _Rtnl:
    def __init__(self, ns, log):
        self.ns, self.log = ns, log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def batch(self, requests):
        self.log += [(self.ns.name, r.what) for r in requests]
