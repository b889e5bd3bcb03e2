"""Bad-input fuzzing (hypothesis) over the CLI and the Python API: every
failure is a clean nsnet error with its exit code, never a traceback, and
leaves the kernel and the state as they were.

NSNET_FUZZ_EXAMPLES sets the number of cases (make reliability: 10,000)."""

import os
import pathlib

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsnet import NetworkSpec, NsnetError
from nsnet.cli import cli

EXAMPLES = int(os.environ.get("NSNET_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
COUNT = {"cli": 0, "api": 0, "cli ok": 0, "api ok": 0}  # cases; of which succeeded

junk = st.text(alphabet=st.sampled_from("ab01/.:-_ é\t"), max_size=18)
octet = st.one_of(st.integers(0, 300), st.just(198))
ip = st.one_of(
    st.builds(lambda c, d: f"198.51.100.{c % 300}" if d else f"203.0.113.{c}", octet,
              st.booleans()),
    junk)
cidr = st.one_of(st.builds(lambda a, p: f"{a}/{p}", ip, st.integers(-1, 40)), junk)
name = st.one_of(st.sampled_from(["n", "ns1", "f", ".", "..", "", "a/b", "x" * 16]), junk)
mac = st.one_of(st.sampled_from(["02:00:00:00:00:01", "01:00:5e:00:00:01", "zz"]), junk)
mtu = st.one_of(st.integers(-10, 70000).map(str), junk)


def _opt(flag, strat):
    return st.one_of(st.just([]), strat.map(lambda v: [flag, v]))


commands = st.one_of(
    st.builds(lambda n, s, g, r, b, m: ["network", "create", n, "--subnet", s, *g, *r, *b, *m],
              name, cidr, _opt("--gateway", ip), _opt("--ip-range", cidr),
              _opt("--bridge", name), _opt("--mtu", mtu)),
    st.builds(lambda net, n, i, m, f, h, c: ["connect", net, *n, *i, *m, *f, *h, *c],
              st.sampled_from(["f", "nope", ""]), st.lists(name, min_size=1, max_size=3),
              _opt("--ip", ip), _opt("--mac", mac), _opt("--ifname", name),
              _opt("--host-ifname", name), st.sampled_from([[], ["--create"]])),
    st.builds(lambda n: ["ns", "add", *n], st.lists(name, min_size=1, max_size=3)),
    st.builds(lambda net, n: ["disconnect", net, n], st.sampled_from(["f", "nope"]), name),
    st.builds(lambda n: ["network", "rm", n], name),
)


def _fingerprint(sandbox, eng):
    """Everything a failed command must leave as it was: links, addresses and
    routes (host and every namespace), namespaces, nft rules (nft's own
    listing), resolv.conf files, and the state."""
    snap = eng.snapshot()
    links = sorted((lk.name, lk.index, lk.alias, lk.master, lk.up) for lk in snap.links)
    addrs = sorted((a.index, a.cidr) for a in snap.addresses)
    names = sorted(os.listdir(sandbox.netns_dir))
    routes = {"": sorted((r.dst, r.gateway) for r in snap.routes)}
    for name in names:
        inner = eng.snapshot(name)
        routes[name] = sorted((r.dst, r.gateway) for r in inner.routes)
        routes[name + " addrs"] = sorted(a.cidr for a in inner.addresses)
    nft = sandbox.host("nft", "list", "ruleset").stdout
    resolv = {os.path.join(d, f): pathlib.Path(d, f).read_text()
              for d, _, fs in os.walk(sandbox.etc_dir) for f in fs}
    return (links, addrs, names, routes, nft, resolv,
            [n.to_dict() for n in eng.networks()], eng.ns_list(), eng.ports())


def _assert_connected(eng, net: str, eps) -> None:
    """What a connect that succeeded must have made, seen in the kernel."""
    links = eng.rtnl.link_by_name()
    bridge = links[eng.network(net).bridge]
    for ep in eps:
        host = links.get(ep.host_ifname)
        assert host and host.alias == f"nsnet:ep:{ep.id}" and host.master == bridge.index, ep
        inner = eng.snapshot(ep.netns)
        assert ep.address in {a.cidr for a in inner.addresses_of(ep.ifname)}, ep
    assert eng.reconcile(dry_run=True) == []


def _undo_connect(eng, net: str, before_eps: set[str], before_ns: set[str]) -> None:
    new = [e for e in eng.network(net).endpoints if e.netns not in before_eps]
    assert new, "a connect that succeeded connected nothing"
    _assert_connected(eng, net, new)
    eng.disconnect(net, [e.netns for e in new])
    made = [n.name for n in eng.ns_list() if n.owned and n.name not in before_ns]
    if made:
        eng.ns_rm(made)


def _report():
    out = os.environ.get("NSNET_FUZZ_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(f"fuzz {COUNT}\n")


def _check_cli_success(sandbox, eng, argv, before) -> None:
    """A command that succeeded did what it says; undone, nothing differs."""
    from nsnet import NotFound

    if argv[:2] == ["network", "create"]:
        net = eng.network(argv[2])
        assert eng.rtnl.link_by_name()[net.bridge].alias == f"nsnet:net:{net.id}"
        assert eng.reconcile(dry_run=True) == []
        eng.network_rm(net.name)
    elif argv[0] == "connect":
        _undo_connect(eng, argv[1], {e["netns"] for e in before[6][0]["endpoints"]},
                      {n.name for n in before[7]})
    elif argv[:2] == ["ns", "add"]:
        made = [n.name for n in eng.ns_list() if n.name not in {m.name for m in before[7]}]
        assert made and all(os.path.exists(os.path.join(sandbox.netns_dir, n)) for n in made)
        eng.ns_rm(made)
    elif argv[:2] == ["network", "rm"]:
        try:
            eng.network(argv[2])
            raise AssertionError(f"{argv}: the network is still there")
        except NotFound:
            pass
        eng.network_create(NetworkSpec("f", "198.51.100.0/24"))  # the fuzz's network
        return
    else:
        raise AssertionError(f"{argv} cannot succeed here (nothing is connected)")
    assert _fingerprint(sandbox, eng) == before, argv


def test_cli_fuzz(sandbox, monkeypatch):
    for key, value in sandbox.env().items():
        if key.startswith("NSNET_"):
            monkeypatch.setenv(key, value)
    eng = sandbox.engine()
    eng.network_create(NetworkSpec("f", "198.51.100.0/24"))
    runner = CliRunner()

    @SETTINGS
    @given(commands)
    def run(argv):
        COUNT["cli"] += 1
        before = _fingerprint(sandbox, eng)
        res = runner.invoke(cli, argv)
        assert res.exception is None or isinstance(res.exception, SystemExit), argv
        assert "Traceback" not in res.output
        if res.exit_code != 0:
            assert res.exit_code in (2, 3, 4, 5, 6), (argv, res.output)
            assert res.output.count("\n") <= 30 and (
                "nsnet: error:" in res.output or "Error:" in res.output), res.output
            assert _fingerprint(sandbox, eng) == before, argv
        else:
            COUNT["cli ok"] += 1
            _check_cli_success(sandbox, eng, argv, before)

    run()
    _report()


port = st.one_of(st.sampled_from(["8080:80", "9000-9001:90-91/udp", "198.51.100.1:81:80",
                                  "0:80", "70000:1", "80:80/sctp", "1-3:1-2"]), junk)
api_ops = st.one_of(
    st.tuples(st.just("network_create"), name, cidr, st.one_of(st.none(), ip),
              st.one_of(st.none(), cidr), st.one_of(st.none(), name),
              st.one_of(st.none(), st.integers(-5, 70000))),
    st.tuples(st.just("connect"), st.sampled_from(["f", "nope", ""]),
              st.lists(name, min_size=1, max_size=3), st.one_of(st.none(), ip),
              st.one_of(st.none(), mac), st.one_of(st.none(), name),
              st.lists(port, max_size=2), st.lists(name, max_size=2), st.booleans()),
    st.tuples(st.sampled_from(["port_add", "port_rm"]), st.sampled_from(["f", "nope"]),
              st.sampled_from(["pf", "n", ""]), st.lists(port, min_size=1, max_size=2)),
    st.tuples(st.just("disconnect"), st.sampled_from(["f", "nope"]),
              st.lists(name, min_size=1, max_size=2)),
    st.tuples(st.sampled_from(["ns_add", "ns_rm"]), st.lists(name, min_size=1, max_size=3)),
)


def _api_call(eng, op):
    """Runs one operation; returns how to undo it when it succeeds."""
    from nsnet import ConnectOptions, parse_ports

    kind = op[0]
    if kind == "network_create":
        net = eng.network_create(NetworkSpec(*op[1:]))
        assert eng.rtnl.link_by_name()[net.bridge].alias == f"nsnet:net:{net.id}"
        return lambda: eng.network_rm(net.name)
    if kind == "connect":
        _, net, names, ip_, mac_, ifname, ports_, aliases, create = op
        before_eps = {e.netns for e in eng.network("f").endpoints}
        before_ns = {n.name for n in eng.ns_list()}
        eng.connect(net, names, ConnectOptions(ip=ip_, mac=mac_, ifname=ifname, create=create,
                                               ports=parse_ports(ports_),
                                               aliases=tuple(aliases)))
        return lambda: _undo_connect(eng, net, before_eps, before_ns)
    if kind in ("port_add", "port_rm"):
        _, net, ns, specs = op
        maps = parse_ports(specs)
        if kind == "port_add":
            eng.port_add(net, ns, maps)
            published = {(p.netns, p.port) for p in eng.ports(net)}
            assert all((ns, m) in published for m in maps)
            return lambda: eng.port_rm(net, ns, maps)
        eng.port_rm(net, ns, maps)
        assert not {m for p in eng.ports(net) for m in [p.port]} & set(maps)
        return lambda: None
    if kind == "disconnect":
        eng.disconnect(op[1], op[2])
        raise AssertionError(f"{op} cannot succeed ('pf' is not among the names)")
    if kind == "ns_add":
        made = [n.name for n in eng.ns_add(op[1])]
        return lambda: eng.ns_rm(made)
    eng.ns_rm(op[1])
    raise AssertionError(f"{op}: removed a namespace the fuzz never made")


def test_api_fuzz(sandbox):
    """Every engine entry point with bad and borderline inputs: an error is a
    clean NsnetError that changed nothing; a success did what it says and,
    undone, leaves everything as it was."""
    from nsnet import ConnectOptions

    eng = sandbox.engine()
    eng.network_create(NetworkSpec("f", "198.51.100.0/24"))
    eng.connect("f", ["pf"], ConnectOptions(create=True))

    @SETTINGS
    @given(api_ops)
    def run(op):
        COUNT["api"] += 1
        before = _fingerprint(sandbox, eng)
        try:
            undo = _api_call(eng, op)
        except NsnetError as exc:
            assert 2 <= exc.exit_code <= 6, exc
            assert "\n" not in str(exc)
            assert _fingerprint(sandbox, eng) == before, op
        else:
            COUNT["api ok"] += 1
            undo()
            assert _fingerprint(sandbox, eng) == before, op

    run()
    _report()
