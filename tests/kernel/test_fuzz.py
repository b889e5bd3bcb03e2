"""Bad-input fuzzing (hypothesis) over the CLI and the Python API: every
failure is a clean nsnet error with its exit code, never a traceback, and
leaves the kernel and the state as they were.

NSNET_FUZZ_EXAMPLES sets the number of cases (make reliability: 10,000)."""

import os

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsnet import NetworkSpec, NsnetError
from nsnet.cli import cli

EXAMPLES = int(os.environ.get("NSNET_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
COUNT = {"cli": 0, "api": 0}

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
    links = sorted((lk.name, lk.index, lk.alias, lk.master) for lk in eng.snapshot().links)
    addrs = sorted((a.index, a.cidr) for a in eng.snapshot().addresses)
    return (links, addrs, sorted(os.listdir(sandbox.netns_dir)),
            [n.to_dict() for n in eng.networks()], eng.ns_list())


def _report():
    out = os.environ.get("NSNET_FUZZ_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(f"fuzz {COUNT}\n")


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

    run()
    _report()


def test_api_fuzz(sandbox):
    eng = sandbox.engine()

    @SETTINGS
    @given(name, cidr, st.one_of(st.none(), ip), st.one_of(st.none(), cidr),
           st.one_of(st.none(), name), st.one_of(st.none(), st.integers(-5, 70000)))
    def run(n, subnet, gateway, ip_range, bridge, mtu_value):
        COUNT["api"] += 1
        before = _fingerprint(sandbox, eng)
        try:
            net = eng.network_create(NetworkSpec(n, subnet, gateway, ip_range, bridge, mtu_value))
        except NsnetError as exc:
            assert 2 <= exc.exit_code <= 6, exc
            assert "\n" not in str(exc)
            assert _fingerprint(sandbox, eng) == before
        else:
            eng.network_rm(net.name)
            assert _fingerprint(sandbox, eng)[:4] == before[:4]

    run()
    _report()
