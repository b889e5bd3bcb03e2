"""The topology loader never fails except with InvalidInput naming file:line."""

from __future__ import annotations

import os
import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsnet import InvalidInput, parse_topology

KEYS = ["name", "networks", "nodes", "links", "subnet", "gateway", "connect", "network",
        "ip", "a", "b", "a_ip", "b_ip", "emulation", "rate", "loss", "delay", "jitter",
        "routes", "dst", "via", "publish", "aliases", "mtu", "internal", "forward", "bogus"]
SCALARS = st.one_of(st.sampled_from(["10.0.0.0/24", "10.0.0.1", "10.0.0.1/30", "x", "1",
                                     "10mbit", "5%", "50ms", "yes", "", "8080:80",
                                     "10.0.0.0/33", "-1", "a", "b"]),
                    st.integers(-5, 70000), st.booleans(), st.none(), st.text(max_size=8))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)


@settings(max_examples=int(os.environ.get("NSNET_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(TREES, st.builds(lambda t: {"name": "t", **(t if isinstance(t, dict) else {})},
                                  TREES)))
def test_loader_fuzz(tree) -> None:
    text = yaml.safe_dump(tree)
    try:
        parse_topology(text, "f.yaml")
    except InvalidInput as exc:
        assert re.match(r"^f\.yaml:\d+: ", str(exc)), str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_loader_fuzz_raw_text(text: str) -> None:
    try:
        parse_topology(text, "f.yaml")
    except InvalidInput as exc:
        assert str(exc).startswith("f.yaml:")
