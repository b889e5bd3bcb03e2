"""Declarative topologies: a YAML file (or code) describing networks, nodes,
point-to-point links and link emulation, brought up and down as a whole,
and drawn."""

from __future__ import annotations

from .api import NodeHandle, Topology
from .apply import Change, down, plan, up
from .graph import live_graph, render, to_dot, to_mermaid
from .load import Connection, Emulation, Link, Node, TopologySpec, load_topology, parse_topology

__all__ = ["Change", "Connection", "Emulation", "Link", "Node", "NodeHandle", "Topology",
           "TopologySpec", "down",
           "live_graph", "load_topology", "parse_topology", "plan", "render", "to_dot",
           "to_mermaid", "up"]

# Names the package root (nsnet) re-exports.
topology_up, topology_down, topology_plan = up, down, plan
topology_graph, render_graph = live_graph, render
