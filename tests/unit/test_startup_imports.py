"""#15: what a small command imports at start-up (no timing: module sets).

Reshaping the engine made every ``nsnet`` command ~60 ms slower to start:
the facade imported every resource (overlay driver, links, probes), the
kernel package every submodule, and the CLI the whole engine before parsing
its arguments.  Each test here starts a fresh interpreter (``python -I``),
imports what a command imports, and lists ``sys.modules``: a heavy module
coming back into a small command's start fails here, not in a benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nsnet.engine import intents


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-I", "-c",
                          f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


# what only some commands use: overlay networks, cluster membership,
# topology links (tc), probes (ICMP), published ports (sockets), conntrack,
# reconcile, rich's tables
LAZY = {"nsnet.engine.overlay", "nsnet.engine.links", "nsnet.engine.probes", "nsnet.reconcile",
        "nsnet.kernel.tc", "nsnet.kernel.icmp", "nsnet.kernel.sockets", "nsnet.kernel.conntrack",
        "nsnet.kernel.vxlan", "nsnet.topology", "nsnet.doctor", "nsnet.explain", "rich"}


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m in LAZY or m.startswith(("nsnet.cluster", "rich."))}


def test_the_cli_starts_without_the_engine():
    """``nsnet --help`` (and any command before it runs): click and the
    CLI module, no engine, kernel, state or firewall code."""
    got = _modules_after("import nsnet.cli.main")
    assert {m for m in got if m.startswith("nsnet")} <= {
        "nsnet", "nsnet._lazy", "nsnet.cli", "nsnet.cli.main", "nsnet.config", "nsnet.errors"}, got
    # nor what only those layers need (hashlib: state's temporary names)
    assert not got & {"sqlite3", "ctypes", "hashlib", "secrets", "ipaddress"}, got


def test_the_engine_imports_no_resource_a_small_command_does_not_use():
    """What ``ns ls``, ``network ls`` and ``connect`` import with the engine."""
    got = _modules_after("import nsnet\nnsnet.Engine\nimport nsnet.cli.main")
    assert "nsnet.engine.facade" in got
    assert not _heavy(got), _heavy(got)
    # an API user's start (click imports uuid itself)
    got = _modules_after("import nsnet\nnsnet.Engine")
    assert not _heavy(got) and not got & {"hashlib", "secrets", "uuid", "click"}, got


def test_lazy_names_still_resolve():
    """The names made lazy are the same objects as the modules' own."""
    code = ("import nsnet.kernel as k, nsnet.engine as e\n"
            "import nsnet.kernel.tc as tc, nsnet.engine.probes as pr, nsnet.engine.links as li\n"
            "assert k.req_netem is tc.req_netem and k.forget_udp and k.ping and k.busy_ports\n"
            "assert e.CheckResult is pr.CheckResult and e.P2PLink is li.P2PLink and e.Engine\n"
            "import nsnet\n"
            "from nsnet.config import DEFAULT_STATE_DIR\n"
            "assert nsnet.DEFAULT_STATE_DIR is DEFAULT_STATE_DIR")
    _modules_after(code)
    with pytest.raises(AttributeError):
        import nsnet.kernel

        nsnet.kernel.no_such_name  # noqa: B018


def test_a_host_of_no_cluster_lists_overlays_without_the_cluster_code(tmp_path):
    """``network ls`` asks the overlay driver for the cluster's networks: on
    a host that joined none, it learns so without importing nsnet.cluster."""
    code = (f"from types import SimpleNamespace\n"
            f"from nsnet.engine.overlay import OverlayDriver\n"
            f"ctx = SimpleNamespace(store=SimpleNamespace(state_dir={str(tmp_path)!r}))\n"
            f"assert OverlayDriver(ctx, None, None).cluster_networks() == []")
    got = _modules_after(code)
    assert not {m for m in got if m.startswith("nsnet.cluster")}, got


def test_the_membership_file_name_is_the_cluster_code_s():
    from nsnet.cluster.membership import CONFIG_FILE
    from nsnet.engine.overlay import CLUSTER_FILE

    assert CLUSTER_FILE == CONFIG_FILE


# ------------------------------------------------- intents without dataclasses
def test_intents_behave_as_frozen_values():
    ref = intents.EndpointRef("e1", "veth1", "ns1")
    a = intents.ConnectIntent((ref,), ("ns1",))
    assert a == intents.ConnectIntent(endpoints=(ref,), create_ns=("ns1",))
    assert a != intents.NsAddIntent((ref,), ("ns1",))  # same fields, another kind
    assert hash(a) == hash(intents.ConnectIntent((ref,), ("ns1",)))
    assert a.pristine_lo == () and a.what == "connect" and not a.forward
    assert repr(ref) == "EndpointRef(id='e1', host_ifname='veth1', netns='ns1')"
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        a.create_ns = ()  # type: ignore[misc]
    narrower = a.replace(create_ns=())
    assert narrower.create_ns == () and a.create_ns == ("ns1",) and narrower.endpoints == (ref,)


def test_intents_refuse_what_a_dataclass_refuses():
    with pytest.raises(TypeError):
        intents.EndpointRef("e1", "veth1")  # netns has no default
    with pytest.raises(TypeError):
        intents.LinkIntent("s1", "to-s2", "extra")
    with pytest.raises(TypeError):
        intents.LinkIntent("s1", node="s2")  # given twice
    with pytest.raises(TypeError):
        intents.DnsIntent(names=("a",))


def test_a_record_field_named_as_a_method_has_no_default_and_mutables_are_refused():
    class Named(intents.Record):
        values: tuple  # shadows Record.values: no default from the method
        replace: int = 3

    with pytest.raises(TypeError, match="missing argument 'values'"):
        Named()
    assert Named(values=(1,)).fields == ("values", "replace")
    with pytest.raises(TypeError, match="mutable default"):
        class Shared(intents.Record):  # defining it is the test
            items: list = []


def test_intents_serialise_by_field_name():
    kind, payload = intents.encode(intents.DeleteIntent(
        ("e1",), ("ns1",), intents.NetworkRef("n1", "br-n1", "bridge", 7)))
    assert kind == "delete"
    assert json.loads(json.dumps(payload)) == {
        "endpoints": ["e1"], "namespaces": ["ns1"],
        "network": {"id": "n1", "bridge": "br-n1", "driver": "bridge", "link_group": 7}}
    assert intents.NetworkCreateIntent.fields == (
        "id", "bridge", "forwarding_was_off", "forwarding6_was_off", "driver", "name")


def test_new_ids_have_the_shape_of_uuid4_hex():
    import uuid

    from nsnet.engine.context import new_id

    for _ in range(200):
        ident = new_id()
        assert len(ident) == 32 and ident == ident.lower()
        parsed = uuid.UUID(hex=ident)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == ident
    assert len({new_id() for _ in range(1000)}) == 1000
