"""Reconcile sees firewall drift by content, not by count (issue 13).

Each attack edits nsnet's own tables in the sandbox host so that every
owner keeps its number of rules and elements -- what a count comparison
cannot see -- and checks that ``reconcile --dry-run`` reports it (exit 1,
naming the firewall), that ``reconcile`` restores the original content, and
that the dry run is clean afterwards.  The last test is the other half of
the promise: a correct ruleset, however it was reached, is never drift.
"""

import json
import subprocess

from nsnet import ConnectOptions, FakeFirewall, NetworkSpec
from nsnet import parse_ports as ports


def _listing(sandbox, *what: str) -> list[dict]:
    out = sandbox.host("nft", "-j", "-a", "list", *what).stdout
    return [o for o in json.loads(out)["nftables"] if "metainfo" not in o]


def _nft_json(sandbox, commands: list[dict]) -> None:
    subprocess.run(["nsenter", f"--net={sandbox.host_path}", "nft", "-j", "-f", "-"],
                   input=json.dumps({"nftables": commands}), text=True, check=True,
                   capture_output=True)


def _ruleset(sandbox) -> str:
    return sandbox.host("nft", "list", "table", "ip", "nsnet").stdout


def _assert_reported_and_repaired(sandbox, original: str) -> None:
    assert _ruleset(sandbox) != original  # the attack did change something
    dry = sandbox.cli("reconcile", "--dry-run")
    assert dry.returncode == 1, (dry.stdout, dry.stderr)
    assert "firewall" in dry.stdout and "nftables" in dry.stdout, dry.stdout
    assert _ruleset(sandbox) != original  # a dry run changes nothing
    fixed = sandbox.cli("reconcile")
    assert fixed.returncode == 0, fixed.stderr
    assert _ruleset(sandbox) == original
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0


def _setup(sandbox) -> str:
    assert sandbox.cli("network", "create", "front", "--subnet", "198.51.100.0/24",
                       "--no-dns").returncode == 0
    web = sandbox.name("web")
    res = sandbox.cli("connect", "front", web, "--create", "-p", "8080:80")
    assert res.returncode == 0, res.stderr
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    return web


def test_rule_with_another_verdict_and_same_count_is_drift(sandbox):
    _setup(sandbox)
    original = _ruleset(sandbox)
    guard = [o["rule"] for o in _listing(sandbox, "chain", "ip", "nsnet", "guard")
             if "rule" in o]
    assert len(guard) == 1 and guard[0]["comment"] == "nsnet"
    # the loopback guard's drop becomes an accept: same chain, same owner
    # comment, same count -- the hole CVE-2020-8558 is about
    sandbox.host("nft", "replace", "rule", "ip", "nsnet", "guard", "handle",
                 str(guard[0]["handle"]), "iifname", "!=", "lo", "ip", "daddr",
                 "127.0.0.0/8", "accept", "comment", '"nsnet"')
    _assert_reported_and_repaired(sandbox, original)


def test_rules_swapped_within_a_chain_is_drift(sandbox):
    """Rule order decides which verdict wins: same rules, other order."""
    _setup(sandbox)
    original = _ruleset(sandbox)
    rules = [o["rule"] for o in _listing(sandbox, "chain", "ip", "nsnet", "forward")
             if "rule" in o]
    first = rules[0]  # vmap @sealed on iifname: moved to the end
    _nft_json(sandbox, [
        {"delete": {"rule": {"family": "ip", "table": "nsnet", "chain": "forward",
                             "handle": first["handle"]}}},
        {"add": {"rule": {k: v for k, v in first.items() if k != "handle"}}}])
    _assert_reported_and_repaired(sandbox, original)


def test_published_port_with_another_dnat_target_is_drift(sandbox):
    _setup(sandbox)
    original = _ruleset(sandbox)
    (m,) = [o["map"] for o in _listing(sandbox, "map", "ip", "nsnet", "ports_any_addr")]
    (elem,) = m["elem"]
    key, target = elem
    assert target.startswith("198.51.100.")
    # same key, same owner comment: only where the port leads changes
    _nft_json(sandbox, [
        {"delete": {"element": {"family": "ip", "table": "nsnet", "name": "ports_any_addr",
                                "elem": [key["elem"]["val"]]}}},
        {"add": {"element": {"family": "ip", "table": "nsnet", "name": "ports_any_addr",
                             "elem": [[key, "198.51.100.250"]]}}}])
    assert "198.51.100.250" in _ruleset(sandbox)
    _assert_reported_and_repaired(sandbox, original)


def test_correct_rulesets_are_never_drift(sandbox):
    """After each step of a busy sequence, the incrementally built tables
    equal their rebuild from the state: no false positive."""
    eng = sandbox.engine()
    a, b, c = (sandbox.name(p) for p in ("ca", "cb", "cc"))

    def clean() -> None:
        assert eng.firewall_differences() == []
        assert eng.reconcile(dry_run=True) == []

    eng.network_create(NetworkSpec("front", "198.51.100.0/24", dns=False))
    clean()
    eng.network_create(NetworkSpec("back", "203.0.113.0/24", dns=False, internal=True,
                                   icc=False))
    clean()
    eng.connect("front", [a], ConnectOptions(create=True, ports=ports(["8080:80"])))
    clean()
    eng.connect("front", [b], ConnectOptions(create=True))
    clean()
    eng.connect("back", [a, c], ConnectOptions(create=True))
    clean()
    eng.port_add("front", b, ports(["8081:80", "127.0.0.1:8082:80/udp"]))
    clean()
    eng.port_rm("front", a, ports(["8080:80"]))
    clean()
    eng.disconnect("back", [c])
    clean()
    eng.network_rm("back", force=True)
    clean()
    eng.network_rm("front", force=True)
    clean()
    assert "nsnet" not in sandbox.host("nft", "list", "tables").stdout


def test_fake_firewall_compares_content_too():
    """The fake (golden tests, no kernel) sees a same-count edit as well."""
    import copy

    from nsnet.firewall import rules as fw
    from nsnet.model import Network

    net = Network("0123456789abcdef", "front", "br-front", "198.51.100.0/24",
                  "198.51.100.1", "198.51.100.0/24", 1500, 0.0)
    fake = FakeFirewall()
    want = fw.full([net], [])
    fake.apply(want)
    assert fake.drift(want) == [] and fake.drift(copy.deepcopy(want)) == []
    edited = copy.deepcopy(want)
    guard = next(c for c in edited if c.get("add", {}).get("rule", {}).get("chain") == "guard")
    guard["add"]["rule"]["expr"][-1] = {"accept": None}  # drop -> accept, same count
    fake.apply(edited)
    assert len(fake.drift(want)) == 2  # the accept unexpected, the drop missing
    fake.apply(want)
    assert fake.drift(want) == []
