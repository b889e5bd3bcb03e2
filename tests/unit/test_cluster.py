"""The cluster model on the in-memory store: membership, VNIs, address
blocks, the endpoint registry and its desired FDB/neighbour entries.
(The same code against a real 3-member etcd: tests/e2e/test_overlay.py.)"""

from __future__ import annotations

import ipaddress
import threading

import pytest

from nsnet.cluster import alloc, membership, registry
from nsnet.cluster.keys import Keys, parse_block
from nsnet.cluster.registry import Desired, EndpointRecord, desired_entries
from nsnet.cluster.store import MemoryStore, absent, parse_store_url
from nsnet.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    PoolExhausted,
    StateError,
    StoreUnavailable,
)

K = Keys()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def rec(host: str, name: str, ip: str, mac: str, vtep: str, net: str = "ov") -> EndpointRecord:
    return EndpointRecord(net, host, name, ip, mac, vtep)


# ---------------------------------------------------------------- store
def test_store_url_parsing():
    cfg = parse_store_url("etcd://198.51.100.11:2379,198.51.100.12,[2001:db8::1]:2380")
    assert cfg.endpoints == ("198.51.100.11:2379", "198.51.100.12:2379", "[2001:db8::1]:2380")
    assert cfg.url == "etcd://198.51.100.11:2379,198.51.100.12:2379,[2001:db8::1]:2380"
    assert not cfg.tls
    assert parse_store_url("etcd://h:1", ca_cert="/ca", cert="/c", key="/k").tls
    for bad in ("http://h:2379", "etcd://", "etcd://h:99999"):
        with pytest.raises(InvalidInput):
            parse_store_url(bad)
    with pytest.raises(InvalidInput, match="together"):
        parse_store_url("etcd://h", cert="/c")


def test_unavailable_store_is_a_state_error_naming_the_store(store):
    store.available = False
    with pytest.raises(StoreUnavailable, match="memory://test") as err:
        membership.join(store, "h1", "198.51.100.11")
    assert isinstance(err.value, StateError)
    assert err.value.exit_code == 11 and err.value.store == "memory://test"


def test_txn_compare_and_swap(store):
    assert store.txn([absent("/a")], [registry.Put("/a", b"1")]).succeeded
    assert not store.txn([absent("/a")], [registry.Put("/a", b"2")]).succeeded
    assert store.get("/a").value == b"1"


# ----------------------------------------------------------- membership
def test_join_registers_member_and_liveness(store):
    lease = membership.join(store, "h1", "198.51.100.11", ttl=5)
    assert store.get(K.member("h1")).json()["advertise"] == "198.51.100.11"
    assert store.get(K.alive("h1")).lease == lease
    st = membership.status(store)
    assert [(h.name, h.alive) for h in st.hosts] == [("h1", True)] and st.quorum


def test_a_live_name_cannot_be_taken_twice(store):
    membership.join(store, "h1", "198.51.100.11")
    with pytest.raises(Conflict, match="already alive"):
        membership.join(store, "h1", "198.51.100.99")
    assert store.get(K.alive("h1")).json()["advertise"] == "198.51.100.11"
    assert len(store.leases) == 1  # the loser's lease was revoked


def test_rejoin_with_own_live_lease_keeps_it(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    assert membership.join(store, "h1", "198.51.100.11", old_lease=lease) == lease


def test_join_validates(store):
    with pytest.raises(InvalidInput):
        membership.join(store, "h/1", "198.51.100.11")
    with pytest.raises(InvalidInput):
        membership.join(store, "h1", "not-an-ip")
    assert store.data == {}


def test_expired_lease_removes_liveness_and_endpoints_but_keeps_blocks(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    net = alloc.create_network(store, "ov", "10.200.0.0/16")
    block = alloc.claim_block(store, net, "h1")
    registry.publish(store, rec("h1", "e1", "10.200.0.2", "02:00:00:00:00:02",
                                "198.51.100.11"), lease)
    store.expire(lease)
    assert store.get(K.alive("h1")) is None
    assert store.get_prefix(K.endpoints("ov"))[0] == []
    # the rule: a dead host's blocks stay its own while it is a member
    assert store.get(K.block("ov", block)).json() == {"host": "h1"}
    st = membership.status(store)
    assert [(h.name, h.alive) for h in st.hosts] == [("h1", False)]
    assert alloc.claim_block(store, net, "h2") != block


def test_renew_re_registers_after_expiry(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    assert membership.renew(store, "h1", lease, "198.51.100.11") == (lease, True)
    store.expire(lease)
    new, renewed = membership.renew(store, "h1", lease, "198.51.100.11")
    assert not renewed and new != lease and store.get(K.alive("h1")).lease == new


def test_leave_refuses_with_endpoints_then_releases_everything(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    net = alloc.create_network(store, "ov", "10.200.0.0/24")
    alloc.claim_block(store, net, "h1")
    registry.publish(store, rec("h1", "e1", "10.200.0.2", "02:00:00:00:00:02",
                                "198.51.100.11"), lease)
    with pytest.raises(Conflict, match="1 endpoint"):
        membership.leave(store, "h1", lease)
    registry.withdraw(store, "ov", "h1", "e1")
    membership.leave(store, "h1", lease)
    assert {k for k in store.data if not k.startswith((K.networks(), K.root + "vni"))} == set()
    assert not store.leases


def test_forget_is_refused_while_alive_and_frees_a_dead_hosts_blocks(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    net = alloc.create_network(store, "ov", "10.200.0.0/24")
    block = alloc.claim_block(store, net, "h1")
    with pytest.raises(Conflict, match="alive"):
        membership.forget(store, "h1")
    store.expire(lease)
    membership.forget(store, "h1")
    assert store.get(K.block("ov", block)) is None and store.get(K.member("h1")) is None
    with pytest.raises(NotFound):
        membership.forget(store, "h1")


# ------------------------------------------------------------- networks
def test_vnis_are_distinct_and_names_unique(store):
    a = alloc.create_network(store, "a", "10.200.0.0/16")
    b = alloc.create_network(store, "b", "10.201.0.0/16")
    assert (a.vni, b.vni) == (alloc.VNI_FIRST, alloc.VNI_FIRST + 1)
    with pytest.raises(AlreadyExists):
        alloc.create_network(store, "a", "10.202.0.0/16")
    with pytest.raises(Conflict, match="overlaps"):
        alloc.create_network(store, "c", "10.200.128.0/17")
    assert alloc.get_network(store, "b") == b


def test_vni_allocation_skips_taken_vnis_after_wraparound(store):
    store.put(K.vni_next(), str(alloc.VNI_LAST + 1).encode())
    store.put(K.vni(alloc.VNI_FIRST), b"someone")
    net = alloc.create_network(store, "a", "10.200.0.0/16")
    assert net.vni == alloc.VNI_FIRST + 1


def test_concurrent_creates_never_share_a_vni(store):
    made, errors = [], []

    def create(i: int) -> None:
        try:
            made.append(alloc.create_network(store, f"n{i}", f"10.{i}.0.0/16"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({n.vni for n in made}) == 20


def test_delete_network_refuses_with_endpoints_and_frees_its_keys(store):
    lease = membership.join(store, "h1", "198.51.100.11")
    net = alloc.create_network(store, "ov", "10.200.0.0/24")
    alloc.claim_block(store, net, "h1")
    registry.publish(store, rec("h1", "e1", "10.200.0.2", "02:00:00:00:00:02",
                                "198.51.100.11"), lease)
    with pytest.raises(Conflict, match="h1"):
        alloc.delete_network(store, "ov")
    registry.withdraw(store, "ov", "h1", "e1")
    alloc.delete_network(store, "ov")
    left = {k for k in store.data if not k.startswith((K.member(""), K.alive("")))}
    assert left == {K.vni_next()}


# ------------------------------------------------------- address blocks
def test_block_claims_are_exclusive_and_reserved_addresses_skipped(store):
    net = alloc.create_network(store, "ov", "10.200.0.0/24", block=26)
    a1 = alloc.BlockAllocator(store, net, "h1")
    a2 = alloc.BlockAllocator(store, net, "h2")
    used1: set[ipaddress.IPv4Address] = set()
    used2: set[ipaddress.IPv4Address] = set()
    for _ in range(62):
        used1.add(a1.allocate(used1))
    for _ in range(64):
        used2.add(a2.allocate(used2))
    assert not used1 & used2
    assert ipaddress.IPv4Address("10.200.0.0") not in used1 | used2
    assert ipaddress.IPv4Address("10.200.0.1") not in used1 | used2  # the gateway
    assert a1.blocks == [ipaddress.IPv4Network("10.200.0.0/26")]
    assert a2.blocks == [ipaddress.IPv4Network("10.200.0.64/26")]
    calls = store.calls
    used1.add(a1.allocate(used1))  # the /26 has 62 usable: a second block
    assert store.calls - calls == 2  # one listing + one transaction
    assert a1.blocks[-1] == ipaddress.IPv4Network("10.200.0.128/26")


def test_allocation_inside_a_block_asks_the_store_nothing(store):
    net = alloc.create_network(store, "ov", "10.200.0.0/16")
    a = alloc.BlockAllocator(store, net, "h1")
    used: set[ipaddress.IPv4Address] = set()
    used.add(a.allocate(used))
    calls = store.calls
    for _ in range(40):
        used.add(a.allocate(used))
    assert store.calls == calls


def test_pool_exhausted_when_every_block_is_claimed(store):
    net = alloc.create_network(store, "ov", "10.200.0.0/29", block=29)
    used: set[ipaddress.IPv4Address] = set()
    a = alloc.BlockAllocator(store, net, "h1")
    for _ in range(5):  # /29 = 8, minus network, gateway, broadcast
        used.add(a.allocate(used))
    with pytest.raises(PoolExhausted):
        a.allocate(used)
    with pytest.raises(PoolExhausted):
        alloc.BlockAllocator(store, net, "h2").allocate(set())


def test_a_hosts_blocks_are_found_by_its_own_index(store):
    net = alloc.create_network(store, "ov", "10.200.0.0/16")
    b = alloc.claim_block(store, net, "h1")
    alloc.claim_block(store, net, "h2")
    assert alloc.host_blocks(store, net, "h1") == [b]
    assert parse_block("10.200.0.64-26") == ipaddress.IPv4Network("10.200.0.64/26")


# ---------------------------------------------------- registry -> FDB
def test_desired_entries_are_the_other_hosts_endpoints():
    records = [rec("h1", "a", "10.200.0.2", "02:00:00:00:00:02", "198.51.100.11"),
               rec("h2", "b", "10.200.0.66", "02:00:00:00:00:42", "198.51.100.12"),
               rec("h3", "c", "10.200.0.130", "02:00:00:00:00:82", "198.51.100.13")]
    d = desired_entries(records, "h1")
    assert d.fdb == {("02:00:00:00:00:42", "198.51.100.12"),
                     ("02:00:00:00:00:82", "198.51.100.13")}
    assert d.neigh == {("10.200.0.66", "02:00:00:00:00:42"),
                       ("10.200.0.130", "02:00:00:00:00:82")}
    assert desired_entries(records, "h9", local_vtep="198.51.100.13").fdb == {
        ("02:00:00:00:00:02", "198.51.100.11"), ("02:00:00:00:00:42", "198.51.100.12")}


def test_duplicate_claims_resolve_the_same_on_every_host():
    records = [rec("h3", "x", "10.200.0.9", "02:00:00:00:00:09", "198.51.100.13"),
               rec("h2", "x", "10.200.0.9", "02:00:00:00:00:09", "198.51.100.12")]
    for local in ("h1", "h4"):
        assert desired_entries(records, local).fdb == {("02:00:00:00:00:09", "198.51.100.12")}


def test_records_are_validated(store):
    with pytest.raises(InvalidInput):
        registry.publish(store, rec("h1", "e/1", "10.200.0.2", "02:00:00:00:00:02",
                                    "198.51.100.11"), 0)
    with pytest.raises(InvalidInput):
        registry.publish(store, rec("h1", "e1", "10.200.0.2", "zz", "198.51.100.11"), 0)


class FakeRtnl:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def batch(self, reqs):
        from nsnet.kernel.netlink import BatchResult

        self.sent += [r.what for r in reqs]
        return BatchResult([(0, "")] * len(reqs))


def test_watcher_and_applier_converge_and_send_only_the_difference(store):
    lease1 = membership.join(store, "h1", "198.51.100.11")
    lease2 = membership.join(store, "h2", "198.51.100.12")
    registry.publish(store, rec("h2", "b", "10.200.0.66", "02:00:00:00:00:42",
                                "198.51.100.12"), lease2)
    rt = FakeRtnl()
    applier = registry.VxlanApplier(rt, 7)
    seen: list[Desired] = []
    watcher = registry.RegistryWatcher(store, "ov", "h1",
                                       lambda d: (seen.append(d), applier.apply(d))).start()
    assert rt.sent == ["add fdb 02:00:00:00:00:42 -> 198.51.100.12",
                       "set neighbour 10.200.0.66 -> 02:00:00:00:00:42"]
    rt.sent.clear()
    registry.publish(store, rec("h1", "a", "10.200.0.2", "02:00:00:00:00:02",
                                "198.51.100.11"), lease1)  # our own: nothing to program
    assert rt.sent == []
    registry.publish_many(store, [rec("h2", "c", "10.200.0.67", "02:00:00:00:00:43",
                                      "198.51.100.12")], lease2)
    assert rt.sent == ["add fdb 02:00:00:00:00:43 -> 198.51.100.12",
                       "set neighbour 10.200.0.67 -> 02:00:00:00:00:43"]
    rt.sent.clear()
    store.expire(lease2)  # h2 died: its entries go
    assert sorted(rt.sent) == sorted([
        "delete fdb 02:00:00:00:00:42 -> 198.51.100.12",
        "delete fdb 02:00:00:00:00:43 -> 198.51.100.12",
        "delete neighbour 10.200.0.66", "delete neighbour 10.200.0.67"])
    watcher.stop()
    assert not store.watches


def test_a_failed_entry_is_tried_again_by_the_next_apply():
    """A request the kernel refused (here ENOBUFS on one FDB append, and on
    one delete) is not counted as programmed: the agent's next apply (its
    periodic re-read pushes the same desired set) sends it again, and only it."""
    from nsnet.kernel.netlink import BatchResult

    class Flaky(FakeRtnl):
        def __init__(self, fail: set[str]) -> None:
            super().__init__()
            self.fail = fail

        def batch(self, reqs):
            self.sent += [r.what for r in reqs]
            return BatchResult([(105, "no buffer") if r.what in self.fail else (0, "")
                                for r in reqs])

    one = Desired(frozenset({("02:00:00:00:00:42", "198.51.100.12"),
                             ("02:00:00:00:00:43", "198.51.100.12")}),
                  frozenset({("10.200.0.66", "02:00:00:00:00:42")}))
    rt = Flaky({"add fdb 02:00:00:00:00:43 -> 198.51.100.12"})
    applier = registry.VxlanApplier(rt, 7)
    assert len(applier.apply(one)) == 1
    rt.sent.clear(), rt.fail.clear()
    assert applier.apply(one) == []
    assert rt.sent == ["add fdb 02:00:00:00:00:43 -> 198.51.100.12"]
    rt.sent.clear()
    rt.fail.add("delete neighbour 10.200.0.66")
    none = Desired(frozenset(), frozenset())
    assert len(applier.apply(none)) == 1
    rt.sent.clear(), rt.fail.clear()
    assert applier.apply(none) == [] and rt.sent == ["delete neighbour 10.200.0.66"]


# --------------------------------------------------- IPv6 blocks (#16)
def test_v6_blocks_are_120s_of_the_first_96_claimed_as_v4_ones(store):
    net = alloc.create_network(store, "ov", "10.200.0.0/24", subnet6="fd00:1::/64")
    assert alloc.get_network(store, "ov") == net
    assert net.span(6) == ipaddress.ip_network("fd00:1::/96") and net.block6 == 120
    b1 = alloc.claim_block(store, net, "h1", version=6)
    b2 = alloc.claim_block(store, net, "h2", version=6)
    assert (str(b1), str(b2)) == ("fd00:1::/120", "fd00:1::100/120")
    assert store.get(K.block("ov", b2)).json() == {"host": "h2"}
    assert parse_block(K.last(K.block("ov", b2))) == b2
    a = alloc.BlockAllocator(store, net, "h1")
    used: set = set()
    for _ in range(3):
        used.add(a.allocate(used, 6))
    used.add(a.allocate(used))  # IPv4 from a v4 block of its own
    assert sorted(map(str, used)) == ["10.200.0.2", "fd00:1::2", "fd00:1::3", "fd00:1::4"]
    assert alloc.release_host_blocks(store, "ov", "h1") == 2  # both families
    assert alloc.host_blocks(store, net, "h1") == []


def test_small_v6_subnets_and_v6_overlaps(store):
    small = alloc.create_network(store, "s", None, subnet6="fd00:2::/112")
    assert small.subnet is None and small.span(6) == ipaddress.ip_network("fd00:2::/112")
    with pytest.raises(Conflict, match="overlaps"):
        alloc.create_network(store, "t", "10.9.0.0/24", subnet6="fd00:2::/64")
    for bad in ("fd00:3::/124", "10.0.0.0/24", "nonsense"):
        with pytest.raises(InvalidInput):
            alloc.create_network(store, "u", None, subnet6=bad)
    with pytest.raises(InvalidInput):
        alloc.create_network(store, "u", None)


def test_network_records_without_v6_read_as_before(store):
    from nsnet.cluster.store import KV

    old = KV(K.network("ov"), b'{"block": 26, "subnet": "10.200.0.0/16", "vni": 4096}', 1, 1)
    net = alloc.OverlayNetwork.from_kv("ov", old)
    assert net.subnet6 is None and net.subnets == (ipaddress.ip_network("10.200.0.0/16"),)
    assert b"subnet6" not in net.record()  # an IPv4-only network's record is unchanged


def test_endpoint_records_carry_both_families_and_old_ones_parse():
    from nsnet.cluster.store import KV

    r = EndpointRecord("ov", "h2", "b", "10.200.0.66", "02:42:0a:c8:00:42", "198.51.100.12",
                       ("b",), "fd00:1::102")
    kv = KV(K.endpoint("ov", "h2", "b"), r.value(), 1, 1)
    assert EndpointRecord.from_kv(K, kv) == r
    old = KV(K.endpoint("ov", "h2", "b"), b'{"host": "h2", "ip": "10.200.0.66", '
             b'"mac": "02:42:0a:c8:00:42", "vtep": "198.51.100.12"}', 1, 1)
    assert EndpointRecord.from_kv(K, old).ip6 == ""
    only6 = EndpointRecord("ov", "h3", "c", "", "02:42:00:00:02:02", "198.51.100.13",
                           ip6="fd00:1::202")
    d = desired_entries([r, only6], "h1")
    assert d.neigh == {("10.200.0.66", "02:42:0a:c8:00:42"),
                       ("fd00:1::102", "02:42:0a:c8:00:42"),
                       ("fd00:1::202", "02:42:00:00:02:02")}
    assert d.fdb == {("02:42:0a:c8:00:42", "198.51.100.12"),
                     ("02:42:00:00:02:02", "198.51.100.13")}
    registry.publish(MemoryStore(), only6, 0)  # valid without an IPv4 address
    with pytest.raises(InvalidInput):
        registry.publish(MemoryStore(), EndpointRecord("ov", "h3", "c", "", "02:42:00:00:02:02",
                                                       "198.51.100.13"), 0)


def test_the_allocator_resumes_where_it_stopped_but_finds_a_freed_address(store):
    """Each allocation starts where the last one ended (a connect of N
    endpoints is not N scans from the block's start), yet an address freed
    behind that point is handed out before a new block is claimed."""
    net = alloc.create_network(store, "ov", "10.200.0.0/24", block=28)
    a = alloc.BlockAllocator(store, net, "h1")
    used: set = set()
    for _ in range(14):  # 10.200.0.2-15: the first /28 full
        used.add(a.allocate(used))
    used.discard(ipaddress.ip_address("10.200.0.5"))
    assert a.allocate(used) == ipaddress.ip_address("10.200.0.5")
    assert a.blocks == [ipaddress.ip_network("10.200.0.0/28")]
