"""A picture of the network, drawn from the live kernel state: namespaces
with their interfaces and addresses, bridges with their gateway, veth pairs
(host end on the edge), point-to-point links with their emulation.

DOT and Mermaid are plain text (no dependency); SVG and PNG are rendered by
Graphviz's ``dot`` (Debian's graphviz package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ..engine import Engine
from ..errors import InvalidInput, NotFound
from ..state.trust import write_atomic_at

__all__ = ["Graph", "live_graph", "render", "to_dot", "to_mermaid"]


@dataclass
class Graph:
    bridges: dict[str, list[str]] = field(default_factory=dict)  # id -> label lines
    namespaces: dict[str, list[str]] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # a, b, label


def _emu_text(emu: dict) -> str:
    parts = []
    if emu.get("rate_bps"):
        parts.append(f"rate {emu['rate_bps'] / 1e6:g}mbit")
    if emu.get("delay_ms"):
        parts.append(f"delay {emu['delay_ms']:g}ms")
    if emu.get("jitter_ms"):
        parts.append(f"jitter {emu['jitter_ms']:g}ms")
    if emu.get("loss_pct"):
        parts.append(f"loss {emu['loss_pct']:g}%")
    return " ".join(parts)


def live_graph(engine: Engine, topology: str | None = None) -> Graph:
    objects = engine.topology_objects(topology)  # None: every topology's (--live)
    if topology and not objects:
        raise NotFound(f"topology {topology!r} is not up")
    nets = [n for n in engine.networks()
            if not topology or ("network", n.name) in objects]
    wanted_ns = {key for (kind, key) in objects if kind == "node"} if topology else None
    g = Graph()
    host = engine.snapshot()
    for net in nets:
        addrs = [a.cidr for a in host.addresses_of(net.bridge)]
        if net.has_ipv6:  # from the record: a host IPv6 dump would list every link-local
            addrs.append(f"{net.gateway6}/{net.prefixlen6}")
        g.bridges[f"br:{net.bridge}"] = [net.bridge, f"bridge of {net.name}", *addrs]
        for ep in net.endpoints:
            if wanted_ns is not None and ep.netns not in wanted_ns:
                continue
            g.namespaces.setdefault(f"ns:{ep.netns}", [ep.netns])
            g.edges.append((f"ns:{ep.netns}", f"br:{net.bridge}", ep.host_ifname))
    names = wanted_ns if wanted_ns is not None else {
        e.netns for n in nets for e in n.endpoints}
    for (kind, _key), (_owner, spec) in objects.items():
        if kind == "link":
            link = json.loads(spec)
            names |= {link["a"], link["b"]}
            label = f"{link['a_ifname']} {link['a_ip']} - {link['b_ifname']} {link['b_ip']}"
            emu = " / ".join(t for t in (_emu_text(link["a_to_b"]), _emu_text(link["b_to_a"]))
                             if t)
            g.edges.append((f"ns:{link['a']}", f"ns:{link['b']}",
                            label + (f"\n{emu}" if emu else "")))
    # endpoints' IPv6 addresses, from their records (as nsnet set them)
    v6 = {(e.netns, e.ifname): e.address6 for n in nets for e in n.endpoints if e.address6}
    for name in sorted(names):
        lines = [name]
        try:
            snap = engine.snapshot(name)
        except NotFound:
            lines.append("(missing)")
        else:
            for link in snap.links:
                if link.name == "lo":
                    continue
                cidrs = " ".join([a.cidr for a in snap.addresses_of(link.name)]
                                 + ([v6[(name, link.name)]] if (name, link.name) in v6 else []))
                lines.append(f"{link.name} {cidrs}".strip())
        g.namespaces[f"ns:{name}"] = lines
    return g


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(g: Graph) -> str:
    out = ["graph nsnet {", '  rankdir=LR; node [fontname="Helvetica", fontsize=11];',
           '  edge [fontname="Helvetica", fontsize=10];']
    for node_id, lines in g.bridges.items():
        out.append(f"  {_q(node_id)} [shape=box, style=\"rounded,filled\", "
                   f"fillcolor=\"#dbe9f6\", label={_q(chr(10).join(lines))}];")
    for node_id, lines in g.namespaces.items():
        out.append(f"  {_q(node_id)} [shape=box3d, label={_q(chr(10).join(lines))}];")
    for a, b, label in g.edges:
        out.append(f"  {_q(a)} -- {_q(b)} [label={_q(label)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _mid(node_id: str) -> str:
    return "n" + "".join(c if c.isalnum() else "_" for c in node_id)


def to_mermaid(g: Graph) -> str:
    out = ["graph LR"]
    for node_id, lines in {**g.bridges, **g.namespaces}.items():
        text = "<br/>".join(lines).replace('"', "'")
        shape = ('(["', '"])') if node_id in g.bridges else ('["', '"]')
        out.append(f"  {_mid(node_id)}{shape[0]}{text}{shape[1]}")
    for a, b, label in g.edges:
        out.append(f"  {_mid(a)} ---|\"{label.replace(chr(10), ' ')}\"| {_mid(b)}")
    return "\n".join(out) + "\n"


def render(g: Graph, path: str) -> None:
    """Write ``path`` in the format its suffix names: .svg .png .dot .mmd."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix in ("dot", "gv"):
        text = to_dot(g)
    elif suffix in ("mmd", "mermaid"):
        text = to_mermaid(g)
    elif suffix in ("svg", "png"):
        dot = shutil.which("dot")
        if not dot:
            raise InvalidInput("rendering SVG/PNG needs Graphviz's 'dot' "
                               "(apt-get install graphviz); .dot and .mmd need nothing")
        proc = subprocess.run([dot, f"-T{suffix}"], input=to_dot(g).encode(),
                              capture_output=True)
        if proc.returncode:
            raise InvalidInput(f"dot failed: {proc.stderr.decode().strip()}")
        _write_output(path, proc.stdout)
        return
    else:
        raise InvalidInput(f"{path}: unknown format (use .svg, .png, .dot or .mmd)")
    _write_output(path, text.encode())


def _write_output(path: str, data: bytes) -> None:
    """Root writes the picture: under a fresh temporary name, then renamed
    over ``path`` -- a symlink planted there (in a directory another user can
    write, such as the working directory) is replaced, never followed."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    try:
        write_atomic_at(fd, os.path.basename(path), data)
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    finally:
        os.close(fd)
