"""Topologies in code, in the spirit of Mininet's ``Topo``::

    with nsnet.Topology("demo", state_dir=..., netns_dir=...) as topo:
        topo.network("lan", "10.0.0.0/24")
        topo.node("a", "lan")
        topo.node("b", "lan")
        topo.link("a", "b", "10.9.0.1/30", "10.9.0.2/30", rate="10mbit")
        topo.up()                       # or let `with` bring it up at the end
        topo["a"].exec(["ping", "-c1", "10.0.0.3"])
    # always taken down here

Objects are described first and brought up together (the engine's bulk
path); leaving the ``with`` block takes the whole topology down, even on
error.  The description is the same data a YAML file gives.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from ..engine import Engine
from ..errors import InvalidInput
from ..model import NetworkSpec
from .apply import Change, down, up
from .load import Connection, Emulation, Link, Node, TopologySpec

__all__ = ["NodeHandle", "Topology"]


@dataclass
class NodeHandle:
    engine: Engine
    name: str

    @property
    def path(self) -> str:
        return self.engine.ns_path(self.name)

    def exec(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run a command inside the node (``nsenter --net``), output captured."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["nsenter", f"--net={self.path}", *argv], check=False, **kw)


class Topology:
    def __init__(self, name: str, engine: Engine | None = None, **engine_kw: Any) -> None:
        self.name = name
        self._own_engine = engine is None
        self.engine = engine or Engine.open(**engine_kw)
        self.networks: dict[str, NetworkSpec] = {}
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self.is_up = False

    def network(self, name: str, subnet: str, **opts: Any) -> Topology:
        self.networks[name] = NetworkSpec(name, subnet, **opts)
        return self

    def node(self, name: str, *connect: str | dict, routes: tuple = ()) -> Topology:
        conns = tuple(Connection(c) if isinstance(c, str) else Connection(**c)
                      for c in connect)
        self.nodes[name] = Node(name, conns, tuple(routes))
        return self

    def link(self, a: str, b: str, a_ip: str, b_ip: str, a_ifname: str | None = None,
             b_ifname: str | None = None, **emulation: Any) -> Topology:
        emu = _emulation(emulation)
        self.links.append(Link(a, b, a_ip, b_ip, a_ifname or f"to-{b}"[:15],
                               b_ifname or f"to-{a}"[:15], emu, emu))
        return self

    def spec(self) -> TopologySpec:
        return TopologySpec(self.name, dict(self.networks), dict(self.nodes), tuple(self.links),
                            f"<topology {self.name}>")

    def up(self) -> list[Change]:
        changes = up(self.engine, self.spec())
        self.is_up = True
        return changes

    def down(self) -> None:
        if self.is_up:
            down(self.engine, self.name)
            self.is_up = False

    def __getitem__(self, name: str) -> NodeHandle:
        if name not in self.nodes:
            raise InvalidInput(f"topology {self.name!r} has no node {name!r}")
        return NodeHandle(self.engine, name)

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.is_up and exc[0] is None and (self.networks or self.nodes):
                self.up()  # described but never brought up: bring it up, then down
            self.down()
        finally:
            if self._own_engine:
                self.engine.close()


def _emulation(opts: dict[str, Any]) -> Emulation:
    """rate='10mbit', delay='50ms', jitter='5ms', loss='10%' -- as in a file."""
    if not opts:
        return Emulation()
    from .load import parse_topology

    body = "\n".join(f"      {k}: {v!r}" if isinstance(v, str) else f"      {k}: {v}"
                     for k, v in opts.items())
    text = ("name: x\nnodes:\n  a:\n  b:\nlinks:\n  - a: a\n    b: b\n    a_ip: 10.0.0.1/30\n"
            f"    b_ip: 10.0.0.2/30\n    emulation:\n{body}\n")
    return parse_topology(text, "<link emulation>").links[0].a_to_b


