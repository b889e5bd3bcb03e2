"""A reconcile plan reads every endpoint once: its firewall and resolv.conf
checks reuse the networks (with their endpoints) the plan observed, and
decide exactly what they decided reading the state themselves."""

from __future__ import annotations

from types import SimpleNamespace

from nsnet.engine.dns_sync import DnsSync
from nsnet.engine.facade import _ReconcileServices
from nsnet.engine.firewall_sync import FirewallSync
from nsnet.model import Endpoint, Network
from nsnet.state import Store


def _net(name, net_id, subnet, dns=True):
    gw = subnet.rsplit(".", 1)[0] + ".1"
    return Network(net_id, name, f"br-{name}", f"{subnet}/24", gw, f"{subnet}/24", 1500, 1.0,
                   dns=dns)


def _ep(ep_id, net, netns, address, created):
    return Endpoint(ep_id, net, netns, f"eth{net}", f"veth{ep_id}", address, "02:00:00:00:00:01",
                    address.rsplit(".", 1)[0] + ".1", True, created)


def _store(tmp_path) -> Store:
    store = Store(str(tmp_path / "state"))
    with store.transaction():
        store.add_network(_net("a", "ida", "10.1.0"))
        store.add_network(_net("b", "idb", "10.2.0", dns=False))
        store.add_endpoints("ida", [_ep("a1", "a", "ns1", "10.1.0.2/24", 3.0),
                                    _ep("a2", "a", "both", "10.1.0.3/24", 5.0)])
        store.add_endpoints("idb", [_ep("b1", "b", "nodns", "10.2.0.2/24", 4.0),
                                    _ep("b2", "b", "both", "10.2.0.3/24", 2.0)])
        store.add_resolv_files(["ns1", "gone"])  # "gone": a file left with no endpoint
    return store


def test_dns_drift_from_the_plans_networks_is_the_same(tmp_path):
    store = _store(tmp_path)
    etc = tmp_path / "etc"
    (etc / "ns1").mkdir(parents=True)
    (etc / "ns1" / "resolv.conf").write_text("stale\n")
    dns = DnsSync(SimpleNamespace(store=store, etc_netns_dir=str(etc)), None)  # type: ignore[arg-type]
    names = store.netns_with_endpoints() | {"gone"}
    assert dns.wanted(names, store.networks()) == dns.wanted(names)
    assert dns.wanted(names)["both"] is not None and dns.wanted(names)["nodns"] is None
    assert dns.drift(store.networks()) == dns.drift() == ["both", "gone", "ns1"]


def test_firewall_desired_from_the_plans_networks_is_the_same(tmp_path):
    store = _store(tmp_path)
    fw = FirewallSync(SimpleNamespace(store=store))  # type: ignore[arg-type]
    assert fw.desired(store.networks()) == fw.desired()


class _CountingStore:
    def __init__(self, store: Store) -> None:
        self.store, self.reads = store, 0

    def networks(self, with_endpoints=True):
        self.reads += with_endpoints
        return self.store.networks(with_endpoints)


def test_a_plan_hands_its_one_read_to_the_firewall_and_dns_checks(tmp_path):
    counting = _CountingStore(_store(tmp_path))
    seen = []
    engine = SimpleNamespace(
        ctx=SimpleNamespace(store=counting),
        fw=SimpleNamespace(differences=lambda nets=None: seen.append(("fw", nets)) or []),
        dns_sync=SimpleNamespace(drift=lambda nets=None: seen.append(("dns", nets)) or []))
    svc = _ReconcileServices(engine)  # type: ignore[arg-type]
    nets = svc.networks()
    svc.firewall_differences()
    svc.resolv_drift()
    assert counting.reads == 1
    assert seen == [("fw", nets), ("dns", nets)] and nets
