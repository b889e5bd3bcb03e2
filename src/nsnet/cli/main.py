"""``nsnet`` command line (click).  Imports only the public API.

Every name of the API is used as ``nsnet.NAME`` inside the command that
needs it, never imported at the top: the package imports a name's module on
first use, so ``nsnet --help`` imports no engine, kernel or state code, and
each command only what it calls (#15: importing the whole engine for every
command made each one's start ~60 ms slower; tests/unit/
test_startup_imports.py guards it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

import nsnet

if TYPE_CHECKING:
    from nsnet import Engine

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class NsnetGroup(click.Group):
    """Translate nsnet errors at the boundary: one line on stderr, the
    error's exit code, no traceback (set NSNET_DEBUG=1 to see one)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except nsnet.NsnetError as exc:  # looked up only when something is raised
            if os.environ.get("NSNET_DEBUG"):
                raise
            click.echo(f"nsnet: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("nsnet: interrupted", err=True)
            ctx.exit(130)


class Settings:
    def __init__(self, host_netns: str | None, state_dir: str, netns_dir: str,
                 etc_netns_dir: str) -> None:
        self.host_netns = host_netns
        self.state_dir = state_dir
        self.netns_dir = netns_dir
        self.etc_netns_dir = etc_netns_dir
        self._engine: Engine | None = None
        self.explain = False  # --explain: print the equivalent commands
        self.dry_run = False  # with --explain: in a throwaway copy
        self.session: nsnet.ExplainSession | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            if self.explain:
                self.session = nsnet.ExplainSession(self.netns_dir, self.etc_netns_dir,
                                                    self.dry_run)
                self._engine = self.session.engine(self.host_netns, self.state_dir,
                                                   self.netns_dir, self.etc_netns_dir)
            else:
                # the environment read once (each NSNET_* value checked), the
                # options (themselves defaulted from the same variables) on top
                config = nsnet.Config.from_env().override(
                    host_netns=self.host_netns, state_dir=self.state_dir,
                    netns_dir=self.netns_dir, etc_netns_dir=self.etc_netns_dir)
                self._engine = nsnet.Engine.open(config=config)
        return self._engine

    def close(self) -> None:
        if self._engine:
            self._engine.close()
        if self.session:
            try:
                click.echo(self.session.text(), nl=False)
            finally:
                self.session.close()


def _set_explain(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Settings).explain = True


def _set_dry_run(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Settings).dry_run = True


def _explained_dry_run(settings: Settings, dry_run: bool) -> bool:
    """A command's own --dry-run with --explain: do it for real, in the
    throwaway copy (so its commands can be printed); False then."""
    if dry_run and settings.explain:
        settings.dry_run = True
        return False
    return dry_run


def _no_copy_for_repairs(settings: Settings, dry_run: bool, command: str) -> None:
    """reconcile/gc repair the real kernel's drift; the dry-run copy is
    rebuilt from the state, so it has none: refuse rather than print nothing."""
    if dry_run and settings.explain:
        raise nsnet.InvalidInput(
            f"{command} --explain --dry-run cannot show repairs: a dry run works in a copy "
            f"rebuilt from nsnet's state, which has no drift; 'nsnet {command} --dry-run' "
            f"lists the repairs, 'nsnet {command} --explain' makes and prints them")


def explainable(dry_run: bool = True) -> Any:
    """``--explain`` (and ``--dry-run``, unless the command has its own) on a
    mutating command: print the equivalent ip/bridge/tc/sysctl/nft commands."""

    def decorate(fn: Any) -> Any:
        fn = click.option("--explain", is_flag=True, expose_value=False, callback=_set_explain,
                          help="Print the equivalent ip/bridge/tc/sysctl/nft commands.")(fn)
        if dry_run:
            fn = click.option("--dry-run", is_flag=True, expose_value=False,
                              callback=_set_dry_run,
                              help="With --explain: change nothing (run in a throwaway "
                                   "copy).")(fn)
        return fn

    return decorate


pass_settings = click.make_pass_decorator(Settings)


def _engine(settings: Settings) -> Engine:
    return settings.engine()


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _table(columns: list[str], rows: list[list[str]]) -> None:
    width = None if sys.stdout.isatty() else 200
    if (width is None and len(rows) > _RICH_ROWS) or width is not None:
        text = _plain_table(columns, rows, width or _terminal_width())
        if text is not None:
            click.echo(text)
            return
    # rich only when it renders (its import is ~0.1 s of a short command)
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(width=width).print(table)


def _terminal_width() -> int:
    from rich.console import Console

    return Console().width


_RICH_ROWS = 500  # on a terminal, rich renders up to this many rows (bold header)
_PLAIN_CELL = re.compile(r"[A-Za-z0-9 ._@/,=+*-]*")


def _plain_table(columns: list[str], rows: list[list[str]], width: int) -> str | None:
    """The text rich prints for a SIMPLE_HEAD table without edges, made
    directly: rich takes ~1 ms per row, 5 s for 5000 namespaces.  None
    (rich renders it) when a cell holds anything rich would interpret
    (markup, emoji codes, wide characters) or the table must fold."""
    cells = [columns, *rows]
    if not all(_PLAIN_CELL.fullmatch(c) for row in cells for c in row):
        return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    total = sum(widths) + 3 * (len(widths) - 1)
    if total > width:
        return None
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "\u2500" * total)
    return "\n".join(lines)


@contextmanager
def _progress(count: int, label: str) -> Iterator[Any]:
    """A rich progress bar on a terminal for bulk work; nothing otherwise.
    Yields ``progress(done, total)`` for the engine."""
    if count < 20 or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.group(cls=NsnetGroup, context_settings=_CTX)
@click.version_option(nsnet.__version__, prog_name="nsnet")
@click.option("--host-netns", envvar="NSNET_HOST_NETNS", metavar="NAME|PATH",
              help="Namespace acting as the host (default: the caller's own).")
@click.option("--state-dir", envvar="NSNET_STATE_DIR", default=nsnet.DEFAULT_STATE_DIR,
              show_default=True, help="Where nsnet keeps its state.")
@click.option("--netns-dir", envvar="NSNET_NETNS_DIR", default=nsnet.DEFAULT_NETNS_DIR,
              show_default=True, help="Where namespaces are bind-mounted.")
@click.option("--etc-netns-dir", envvar="NSNET_ETC_NETNS_DIR",
              default=nsnet.DEFAULT_ETC_NETNS_DIR,
              show_default=True, help="Per-namespace /etc files (resolv.conf), as ip netns.")
@click.option("--explain", is_flag=True,
              help="Mutating commands print the equivalent ip/bridge/tc/sysctl/nft commands.")
@click.pass_context
def cli(ctx: click.Context, host_netns: str | None, state_dir: str, netns_dir: str,
        etc_netns_dir: str, explain: bool) -> None:
    """Docker-style bridge networking for network namespaces."""
    settings = Settings(host_netns, state_dir, netns_dir, etc_netns_dir)
    settings.explain = explain
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# ------------------------------------------------------------------ lab
@cli.command()
@click.option("--down", is_flag=True, help="Remove what the lab made.")
@explainable()
@pass_settings
def lab(settings: Settings, down: bool) -> None:
    """Reproduce the article's lab: ns1, ns2, bridge mydocker0, veth1/veth2, pings."""
    engine = _engine(settings)
    out = click.echo
    if settings.session and not down:  # beside each step: the article's commands
        out = nsnet.lab_explain_printer(settings.session, click.echo)
    if down:
        nsnet.lab_down(engine, out)
    else:
        nsnet.lab_up(engine, out)


# ------------------------------------------------------------ namespaces
@cli.group(cls=NsnetGroup)
def ns() -> None:
    """Network namespaces (compatible with 'ip netns')."""


@ns.command("add")
@click.argument("names", nargs=-1, required=True)
@explainable()
@pass_settings
def ns_add(settings: Settings, names: tuple[str, ...]) -> None:
    """Create namespaces NAME..."""
    for item in _engine(settings).ns_add(list(names)):
        click.echo(item.name)


@ns.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="label=KEY[=VALUE]",
              help="Only namespaces with an endpoint carrying this label (repeatable: AND).")
@pass_settings
def ns_ls(settings: Settings, as_json: bool, filters: tuple[str, ...]) -> None:
    """List namespaces (nsnet's and others in the netns directory)."""
    engine = _engine(settings)
    items = engine.ns_list()
    if filters:
        wanted = [_label_filter(f) for f in filters]
        labelled: dict[str, list[dict[str, str]]] = {}
        for net in engine.networks():
            for ep in net.endpoints:
                labelled.setdefault(ep.netns, []).append(dict(ep.labels))
        items = [i for i in items if all(any(_has_label(lb, w) for lb in labelled.get(i.name, []))
                                         for w in wanted)]
    if as_json:
        _print_json([i.to_dict() for i in items])
        return
    _table(["NAME", "OWNER", "NETWORKS"],
           [[i.name, "nsnet" if i.owned else "-", ",".join(i.networks)] for i in items])


@ns.command("rm")
@click.argument("names", nargs=-1, required=True)
@explainable()
@pass_settings
def ns_rm(settings: Settings, names: tuple[str, ...]) -> None:
    """Remove namespaces NAME... (only ones nsnet created)."""
    _engine(settings).ns_rm(list(names))
    for name in names:
        click.echo(name)


@ns.command("exec", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_settings
def ns_exec(settings: Settings, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside namespace NAME (like 'ip netns exec')."""
    argv = list(command[1:] if command and command[0] == "--" else command)
    sys.stdout.flush()
    _engine(settings).exec(name, argv)


# -------------------------------------------------------------- networks
@cli.group(cls=NsnetGroup)
def network() -> None:
    """Bridge networks (Docker's vocabulary)."""


@network.command("create")
@click.argument("name")
@click.option("--subnet", "subnets", multiple=True,
              help="CIDR, e.g. 172.16.0.0/16; once per family (fd00:1::/64 adds IPv6).")
@click.option("--gateway", "gateways", multiple=True,
              help="Gateway address (default: first usable); one per family.")
@click.option("--ip-range", "ip_ranges", multiple=True,
              help="Allocate endpoint addresses from this sub-range; one per family.")
@click.option("--ipv6", is_flag=True,
              help="IPv6 too (dual-stack); without an IPv6 --subnet a /64 of the host's "
                   "unique-local prefix.")
@click.option("--ipv4/--no-ipv4", default=True, show_default=True,
              help="--no-ipv4: an IPv6-only network.")
@click.option("--ipv6-mode", type=click.Choice(["nat", "routed"]), default="nat",
              show_default=True,
              help="IPv6 egress: nat (masquerade) or routed (own addresses, inbound to "
                   "published ports only).")
@click.option("--bridge", help="Bridge interface name (default: br-<id>).")
@click.option("--mtu", type=int, help="MTU of the bridge and veths (default 1500).")
@click.option("--masquerade/--no-masquerade", default=True, show_default=True,
              help="SNAT traffic leaving the host to the host's address.")
@click.option("--internal", is_flag=True,
              help="No traffic in or out except its endpoints and the gateway.")
@click.option("--icc/--no-icc", default=True, show_default=True,
              help="Let endpoints of this network talk to each other.")
@click.option("--no-dns", is_flag=True,
              help="No embedded DNS (by default endpoints resolve each other by name).")
@click.option("--dns", "dns_servers", multiple=True, metavar="IP",
              help="Upstream DNS server for other names (repeatable; default: the host's "
                   "resolv.conf).")
@click.option("--aux-address", "aux", multiple=True, metavar="NAME=IP",
              help="An address IPAM never hands out (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Metadata on the network (repeatable; see ls --filter label=).")
@click.option("-d", "--driver", default="bridge", show_default=True,
              type=click.Choice(["bridge", "overlay"]),
              help="overlay: one network across the hosts of the cluster this host joined "
                   "(VXLAN; see nsnet cluster join).")
@explainable()
@pass_settings
def network_create(settings: Settings, name: str, subnets: tuple[str, ...],
                   gateways: tuple[str, ...], ip_ranges: tuple[str, ...], ipv6: bool,
                   ipv4: bool, ipv6_mode: str, bridge: str | None, mtu: int | None,
                   masquerade: bool, internal: bool, icc: bool, no_dns: bool,
                   dns_servers: tuple[str, ...], aux: tuple[str, ...],
                   labels: tuple[str, ...], driver: str = "bridge") -> None:
    """Create a bridge network NAME (isolated from other nsnet networks)."""
    subnet, subnet6 = _by_family(subnets, "--subnet")
    gateway, gateway6 = _by_family(gateways, "--gateway")
    ip_range, ip_range6 = _by_family(ip_ranges, "--ip-range")
    if not subnet and ipv4 and not (ipv6 or subnet6):
        raise nsnet.InvalidInput("--subnet is needed (e.g. --subnet 10.1.0.0/24; "
                                 "--ipv6 --no-ipv4 for an IPv6-only network)")
    spec = nsnet.NetworkSpec(name, subnet or "", gateway, ip_range, bridge, mtu, masquerade,
                             internal, icc, not no_dns, dns_servers,
                             _pairs(aux, "--aux-address"), _pairs(labels, "--label"),
                             ipv6=ipv6, subnet6=subnet6, gateway6=gateway6,
                             ip_range6=ip_range6, ipv6_mode=ipv6_mode, ipv4=ipv4, driver=driver)
    click.echo(_engine(settings).network_create(spec).id)


def _by_family(values: tuple[str, ...], option: str) -> tuple[str | None, str | None]:
    """Docker's repeated --subnet/--gateway/--ip-range: at most one of each
    family, matched by the address family ("/" and ":" tell; validated later)."""
    v4 = [v for v in values if ":" not in v]
    v6 = [v for v in values if ":" in v]
    for found, family in ((v4, "IPv4"), (v6, "IPv6")):
        if len(found) > 1:
            raise nsnet.InvalidInput(f"{option} given twice for {family} "
                                     f"({', '.join(found)}): one per family")
    return (v4[0] if v4 else None), (v6[0] if v6 else None)


@network.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="name=SUBSTRING, id=PREFIX, driver=bridge, label=KEY[=VALUE] (as docker "
                   "network ls: one key's values OR, different keys AND).")
@pass_settings
def network_ls(settings: Settings, as_json: bool, filters: tuple[str, ...]) -> None:
    """List networks."""
    engine = _engine(settings)
    # the table shows counts only: no endpoint objects built (5000 of them: 0.2 s)
    nets = _filter_networks(engine.networks(with_endpoints=as_json), filters)
    # overlay networks (#17): the cluster's count of endpoints; the cluster's
    # networks this host does not use yet are listed too (bridge "-")
    cluster = {c["name"]: c for c in _cluster_networks(engine, filters)}
    if as_json:
        out = [n.to_dict() for n in nets]
        here = {n.name for n in nets}
        out += [dict(c, driver="overlay") for name, c in cluster.items() if name not in here]
        _print_json(out)
        return
    counts = engine.endpoint_counts()
    rows = [[n.id[:12], n.name, n.bridge, ",".join(x for x in (n.subnet, n.subnet6) if x),
             ",".join(n.gateways) or "-",
             str(cluster[n.name]["endpoints"] if n.name in cluster else counts.get(n.name, 0)),
             _net_options(n)] for n in nets]
    here = {n.name for n in nets}
    rows += [["-", name, "-", c["subnet"], "-", str(c["endpoints"]), f"overlay,vni={c['vni']}"]
             for name, c in cluster.items() if name not in here]
    _table(["NETWORK ID", "NAME", "BRIDGE", "SUBNET", "GATEWAY", "ENDPOINTS", "OPTIONS"], rows)


def _cluster_networks(engine: Any, filters: tuple[str, ...]) -> list[dict]:
    """The cluster's overlay networks matching name= filters; a store out of
    reach leaves them out with a warning (the local view still prints)."""
    if any(not f.startswith(("name=", "driver=overlay")) for f in filters):
        return []
    try:
        found = engine.overlay_networks()
    except nsnet.StoreUnavailable as exc:
        click.echo(f"nsnet: overlay networks not listed: {exc}", err=True)
        return []
    names = [f.partition("=")[2] for f in filters if f.startswith("name=")]
    return [c for c in found if not names or any(v in c["name"] for v in names)]


def _label_filter(item: str) -> tuple[str, str | None]:
    key, sep, value = item.partition("=")
    if key != "label" or not sep or not value:
        raise nsnet.InvalidInput(f"filter {item!r} is not label=KEY or label=KEY=VALUE")
    name, sep, want = value.partition("=")
    return name, want if sep else None


def _has_label(labels: dict[str, str], wanted: tuple[str, str | None]) -> bool:
    key, value = wanted
    return key in labels and (value is None or labels[key] == value)


def _pairs(items: tuple[str, ...], what: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise nsnet.InvalidInput(f"{what} {item!r} is not KEY=VALUE")
        out.append((key, value))
    return tuple(out)


_NETWORK_FILTERS = {
    "name": lambda n, v: v in n.name,
    "id": lambda n, v: n.id.startswith(v),
    "driver": lambda n, v: v == n.driver,
    "label": lambda n, v: _has_label(dict(n.labels), _label_filter(f"label={v}")),
}


def _filter_networks(nets: list[nsnet.Network], filters: tuple[str, ...]) -> list[nsnet.Network]:
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in _NETWORK_FILTERS:
            raise nsnet.InvalidInput(f"filter {item!r} is not KEY=VALUE with KEY one of "
                                     f"{', '.join(_NETWORK_FILTERS)}")
        wanted.setdefault(key, []).append(value)
    return [n for n in nets if all(any(_NETWORK_FILTERS[k](n, v) for v in values)
                                   for k, values in wanted.items())]


def _net_options(net: nsnet.Network) -> str:
    opts = ["internal"] if net.internal else ([] if net.masquerade else ["no-masquerade"])
    if net.has_ipv6 and net.ipv6_mode != "nat":
        opts.append(f"ipv6-{net.ipv6_mode}")
    opts = (["overlay"] if net.driver == "overlay" else []) + opts
    return ",".join(opts + ([] if net.icc else ["no-icc"])) or "-"


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "template", metavar="TEMPLATE",
              help="Print each network through a Go-template subset: {{.Name}}, "
                   "{{.Subnet}}, {{json .Endpoints}}, {{range .Endpoints}}{{.Address}} {{end}}.")
@pass_settings
def network_inspect(settings: Settings, names: tuple[str, ...], template: str | None) -> None:
    """Print networks as JSON."""
    engine = _engine(settings)
    nets = [_inspect(engine, n) for n in names]
    if template is None:
        _print_json(nets)
        return
    for net in nets:
        click.echo(_render(template, net))


def _inspect(engine: Any, name: str) -> dict:
    """A network as JSON; an overlay's with "cluster": its VNI and every
    endpoint of every host (which host holds which)."""
    net = engine.find_network(name)
    if net is not None and net.driver != "overlay":
        return net.to_dict()
    try:
        view = engine.overlay_view(name)
    except nsnet.NotFound:
        if net is None:
            raise nsnet.NotFound(f"network {name!r} does not exist") from None
        raise
    out = net.to_dict() if net is not None else {"name": name, "driver": "overlay",
                                                  "subnet": view["subnet"], "endpoints": []}
    out["cluster"] = view
    return out


def _lookup(data: Any, path: str, template: str) -> Any:
    """``.A.B`` in ``data``; keys match case-insensitively, ignoring '_' (so
    Docker's .IPRange finds ip_range)."""
    value = data
    for part in filter(None, path.split(".")):
        if not isinstance(value, dict):
            raise nsnet.InvalidInput(f"--format {template!r}: {path} goes into a "
                                     f"{type(value).__name__}")
        keys = {k.replace("_", "").lower(): k for k in value}
        key = keys.get(part.replace("_", "").lower())
        if key is None:
            raise nsnet.InvalidInput(f"--format {template!r}: no field {part!r} (fields: "
                                     f"{', '.join(value)})")
        value = value[key]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _render(template: str, data: Any) -> str:
    import re

    action = re.compile(r"{{\s*(.*?)\s*}}")
    out, pos = [], 0
    for m in action.finditer(template):
        if m.start() < pos:
            continue
        out.append(template[pos:m.start()])
        pos = m.end()
        words = m.group(1).split()
        if len(words) == 2 and words[0] == "range":
            end = template.find("{{end}}", pos)
            if end < 0:
                raise nsnet.InvalidInput(f"--format {template!r}: range without {{{{end}}}}")
            body, pos = template[m.end():end], end + len("{{end}}")
            items = _lookup(data, words[1], template)
            out += [_render(body, item) for item in (items or [])]
        elif len(words) == 2 and words[0] == "json":
            out.append(json.dumps(_lookup(data, words[1], template)))
        elif len(words) == 1 and words[0].startswith("."):
            out.append(_text(_lookup(data, words[0], template)))
        else:
            raise nsnet.InvalidInput(f"--format {template!r}: {{{{{m.group(1)}}}}} is not "
                                     "{{.Field}}, {{json .Field}} or {{range .Field}}...{{end}}")
    out.append(template[pos:])
    return "".join(out)


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Disconnect its endpoints first.")
@explainable()
@pass_settings
def network_rm(settings: Settings, names: tuple[str, ...], force: bool) -> None:
    """Remove networks NAME..."""
    _engine(settings).networks_rm(list(names), force=force)
    for name in names:
        click.echo(name)


@network.command("prune")
@explainable()
@pass_settings
def network_prune(settings: Settings) -> None:
    """Remove every network without endpoints."""
    for name in _engine(settings).network_prune():
        click.echo(name)


# ------------------------------------------------------------- endpoints
@cli.command()
@click.argument("network_name", metavar="NETWORK")
@click.argument("namespaces", nargs=-1, required=True)
@click.option("--ip", help="Static address (one namespace only).")
@click.option("--ip6", help="Static IPv6 address (one namespace only).")
@click.option("--mac", help="Static MAC address (one namespace only).")
@click.option("--ifname", help="Interface name inside the namespace (default eth0, eth1...).")
@click.option("--host-ifname", help="Host-side veth name (one namespace only).")
@click.option("--create", is_flag=True, help="Create missing namespaces.")
@click.option("-p", "--publish", multiple=True, metavar="[[IP:]HOST_PORT:]PORT[/PROTO]",
              help="Publish a port (ranges: 8000-8010:80-90); repeatable; one namespace only.")
@click.option("--force-publish", is_flag=True,
              help="Publish even where a host process listens (it loses that traffic).")
@click.option("--alias", "aliases", multiple=True, metavar="NAME",
              help="Extra DNS name on this network (repeatable; shared names round-robin).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Metadata on the endpoints (repeatable; see ns ls --filter label=).")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as JSON.")
@explainable()
@pass_settings
def connect(settings: Settings, network_name: str, namespaces: tuple[str, ...], ip: str | None,
            ip6: str | None, mac: str | None, ifname: str | None, host_ifname: str | None,
            create: bool,
            publish: tuple[str, ...], force_publish: bool, aliases: tuple[str, ...],
            labels: tuple[str, ...],
            as_json: bool) -> None:
    """Connect namespaces NS... to NETWORK."""
    opts = nsnet.ConnectOptions(ip=ip, ip6=ip6, mac=mac, ifname=ifname, host_ifname=host_ifname,
                                create=create, ports=nsnet.parse_ports(publish, ipv6=True),
                                aliases=aliases, force_ports=force_publish,
                                labels=_pairs(labels, "--label"))
    with _progress(len(namespaces), f"connecting to {network_name}") as advance:
        eps = _engine(settings).connect(network_name, list(namespaces), opts, progress=advance)
    if as_json:
        _print_json([e.to_dict() for e in eps])
        return
    if len(eps) <= 20:
        for e in eps:
            addrs = " ".join(a for a in (e.address, e.address6) if a)
            click.echo(f"{e.netns} {e.ifname} {addrs} (host {e.host_ifname})")
    else:
        click.echo(f"connected {len(eps)} namespaces to {network_name}")


@cli.command()
@click.argument("network_name", metavar="NETWORK")
@click.argument("namespaces", nargs=-1, required=True)
@explainable()
@pass_settings
def disconnect(settings: Settings, network_name: str, namespaces: tuple[str, ...]) -> None:
    """Disconnect namespaces NS... from NETWORK."""
    _engine(settings).disconnect(network_name, list(namespaces))


# ------------------------------------------------------- published ports
@cli.group(cls=NsnetGroup)
def port() -> None:
    """Published ports (like 'docker run -p' and 'docker port')."""


@port.command("add")
@click.argument("network_name", metavar="NETWORK")
@click.argument("netns", metavar="NS")
@click.argument("specs", nargs=-1, required=True, metavar="[[IP:]HOST_PORT:]PORT[/PROTO]...")
@click.option("--force", is_flag=True,
              help="Publish even where a host process listens (it loses that traffic).")
@explainable()
@pass_settings
def port_add(settings: Settings, network_name: str, netns: str, specs: tuple[str, ...],
             force: bool) -> None:
    """Publish ports of NS's endpoint on NETWORK."""
    ports = nsnet.parse_ports(specs, ipv6=True)
    for pub in _engine(settings).port_add(network_name, netns, ports, force):
        click.echo(_port_line(pub))


@port.command("rm")
@click.argument("network_name", metavar="NETWORK")
@click.argument("netns", metavar="NS")
@click.argument("specs", nargs=-1, required=True, metavar="[[IP:]HOST_PORT:]PORT[/PROTO]...")
@explainable()
@pass_settings
def port_rm(settings: Settings, network_name: str, netns: str, specs: tuple[str, ...]) -> None:
    """Stop publishing ports of NS's endpoint on NETWORK."""
    for pub in _engine(settings).port_rm(network_name, netns, nsnet.parse_ports(specs, ipv6=True)):
        click.echo(_port_line(pub))


@port.command("ls")
@click.argument("network_name", metavar="NETWORK", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def port_ls(settings: Settings, network_name: str | None, as_json: bool) -> None:
    """List published ports (of NETWORK, or all)."""
    pubs = _engine(settings).ports(network_name)
    if as_json:
        _print_json([p.to_dict() for p in pubs])
        return
    _table(["NETWORK", "NS", "HOST", "TARGET", "PROTO"],
           [[p.network, p.netns, f"{p.port.host_ip or '0.0.0.0'}:{p.port.host_port}",
             f"{p.ip}:{p.port.port}", p.port.proto] for p in pubs])


def _port_line(pub: nsnet.Published) -> str:
    m = pub.port
    return f"{m.host_ip or '0.0.0.0'}:{m.host_port}/{m.proto} -> {pub.netns} {pub.ip}:{m.port}"


# ------------------------------------------------------------- topologies
@cli.command("up")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan only.")
@explainable(dry_run=False)
@pass_settings
def topo_up(settings: Settings, file: str, dry_run: bool) -> None:
    """Bring the kernel to topology FILE (create, change, remove what differs)."""
    topo = nsnet.load_topology(file)
    dry_run = _explained_dry_run(settings, dry_run)
    engine = _engine(settings)
    if dry_run:
        changes = nsnet.topology_plan(engine, topo)
    else:
        count = sum(len(n.connect) for n in topo.nodes.values())
        with _progress(count, f"bringing up {topo.name}") as advance:
            changes = nsnet.topology_up(engine, topo, progress=advance)
    for change in changes:
        click.echo(str(change))
    click.echo(f"{topo.name}: " + (f"{len(changes)} change(s)" if changes
                                   else "up to date, nothing changed"))


@cli.command("down")
@click.argument("file", type=click.Path(dir_okay=False))
@explainable()
@pass_settings
def topo_down(settings: Settings, file: str) -> None:
    """Remove everything topology FILE made (and nothing else)."""
    topo = nsnet.load_topology(file)
    changes = nsnet.topology_down(_engine(settings), topo.name)
    click.echo(f"{topo.name}: removed {len(changes)} object(s)")


@cli.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_settings
def topo_status(settings: Settings, file: str) -> None:
    """What of topology FILE is up, and what differs (exit 1 if anything)."""
    topo = nsnet.load_topology(file)
    engine = _engine(settings)
    changes = nsnet.topology_plan(engine, topo)
    for change in changes:
        click.echo(f"differs: {change}")
    drift = engine.reconcile(dry_run=True)
    for action in drift:
        click.echo(f"kernel drift ('nsnet reconcile' repairs it): {action}")
    if changes or drift:
        sys.exit(1)
    click.echo(f"{topo.name}: up, as the file says")


@cli.command("graph")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--live", is_flag=True, help="Everything nsnet manages, not one topology.")
@click.option("-o", "--output", required=True, metavar="OUT.svg|.png|.dot|.mmd")
@pass_settings
def graph(settings: Settings, file: str | None, live: bool, output: str) -> None:
    """Draw the network from the live kernel state (a topology's, or --live all)."""
    if not file and not live:
        raise nsnet.InvalidInput("give a topology FILE or --live")
    name = nsnet.load_topology(file).name if file else None
    nsnet.render_graph(nsnet.topology_graph(_engine(settings), name), output)
    click.echo(output)


# ------------------------------------------------------------------- CNI
@cli.group(cls=NsnetGroup)
def cni() -> None:
    """The CNI plugin (type "nsnet") for podman, containerd and Kubernetes."""


@cni.command("install")
@click.option("--dir", "directory", default="/opt/cni/bin", show_default=True,
              help="Where the runtime looks for CNI plugins (its CNI_PATH).")
def cni_install(directory: str) -> None:
    """Install the plugin as DIR/nsnet (runs this nsnet's Python)."""
    click.echo(nsnet.install_cni_plugin(directory))


# ---------------------------------------------------------------- Docker
@cli.command("docker-plugin")
@click.option("--socket", "socket_path", default="/run/docker/plugins/nsnet.sock",
              show_default=True, help="Where Docker looks for the plugin (driver name = "
              "socket name without .sock).")
@pass_settings
def docker_plugin(settings: Settings, socket_path: str) -> None:
    """Serve Docker's network and IPAM driver "nsnet" until SIGTERM."""
    nsnet.serve_docker_plugin(socket_path, host_netns=settings.host_netns,
                              state_dir=settings.state_dir, netns_dir=settings.netns_dir,
                              etc_netns_dir=settings.etc_netns_dir)


# ------------------------------------------------------- reconcile / gc
def _report(actions: list, dry_run: bool, clean: str) -> None:
    for action in actions:
        click.echo(str(action))
    if not actions:
        click.echo(clean)
    elif dry_run:
        sys.exit(1)
    blocked = [a for a in actions if a.kind == "blocked"]
    if blocked:
        raise nsnet.Conflict(f"{len(blocked)} problem(s) need a person: see above")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print the differences; exit 1 if any.")
@explainable(dry_run=False)
@pass_settings
def reconcile(settings: Settings, dry_run: bool) -> None:
    """Make the kernel match nsnet's state (after a crash, a reboot, or meddling)."""
    _no_copy_for_repairs(settings, dry_run, "reconcile")
    actions = _engine(settings).reconcile(dry_run=dry_run)
    _report(actions, dry_run, "in sync: the kernel matches the state")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print what would go; exit 1 if anything.")
@explainable(dry_run=False)
@pass_settings
def gc(settings: Settings, dry_run: bool) -> None:
    """Remove nsnet-marked objects that no record claims."""
    _no_copy_for_repairs(settings, dry_run, "gc")
    _report(_engine(settings).gc(dry_run=dry_run), dry_run, "nothing to collect")


# ---------------------------------------------------------------- probes
@cli.command()
@click.argument("netns")
@click.argument("address")
@click.option("-c", "--count", type=click.IntRange(1, 1_000_000), default=4, show_default=True)
@click.option("-i", "--interval", type=click.FloatRange(0.01, 60), default=1.0,
              show_default=True)
@click.option("-W", "--timeout", type=click.FloatRange(0.01, 60), default=1.0,
              show_default=True)
@pass_settings
def ping(settings: Settings, netns: str, address: str, count: int, interval: float,
         timeout: float) -> None:
    """ICMP echo from inside NETNS to ADDRESS (no ping binary needed)."""
    click.echo(f"PING {address} from {netns}: 56 data bytes")
    rtts = []
    for echo in _engine(settings).ping(netns, address, count, interval, timeout):
        if echo.rtt_ms is None:
            click.echo(f"no answer from {echo.target}: icmp_seq={echo.seq}")
            continue
        rtts.append(echo.rtt_ms)
        click.echo(f"{echo.size} bytes from {echo.target}: icmp_seq={echo.seq} "
                   f"ttl={echo.ttl} time={echo.rtt_ms:.3f} ms")
    loss = 100 * (count - len(rtts)) // count
    click.echo(f"--- {address} ping statistics ---")
    click.echo(f"{count} packets transmitted, {len(rtts)} received, {loss}% packet loss")
    if rtts:
        click.echo(f"rtt min/avg/max = {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/"
                   f"{max(rtts):.3f} ms")
    else:
        sys.exit(1)


@cli.command()
@click.argument("network_name", metavar="NETWORK", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def check(settings: Settings, network_name: str | None, as_json: bool) -> None:
    """Reachability matrix between the endpoints of NETWORK (or all networks)."""
    results = _engine(settings).check(network_name)
    if as_json:
        _print_json([{"network": r.network, "ok": r.ok,
                      "pairs": [{"from": a, "to": b, "ok": ok} for (a, b), ok in r.reach.items()]}
                     for r in results])
    else:
        for r in results:
            _print_matrix(r)
    nsnet.check_ok(results)


def _print_matrix(result: nsnet.CheckResult) -> None:
    click.echo(f"*** {result.network}: reachability between {len(result.endpoints)} endpoints")
    for src in result.endpoints:
        cells = [dst if result.reach[(src, dst)] else "X"
                 for dst in result.endpoints if dst != src]
        click.echo(f"{src} -> {' '.join(cells)}")
    total = len(result.reach)
    lost = len(result.failed)
    pct = 100 * lost // total if total else 0
    click.echo(f"*** Results: {pct}% dropped ({total - lost}/{total} received)")


# --------------------------------------------------------------- doctor
@cli.command()
@click.argument("src", required=False)
@click.argument("dst", required=False, metavar="DST[:PORT[/tcp|/udp]]")
@click.option("--kernel", "kernel", is_flag=True,
              help="Which kernel features nsnet can use here, and what each missing one "
                   "disables.")
@click.option("--family", type=click.Choice(["4", "6"]),
              help="Walk the IPv4 or the IPv6 path only (default: the family of the "
                   "addresses given, else both on dual-stack).")
@click.option("-4", "family", flag_value="4", help="--family 4.")
@click.option("-6", "family", flag_value="6", help="--family 6.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def doctor(settings: Settings, src: str | None, dst: str | None, kernel: bool,
           family: str | None, as_json: bool) -> None:
    """Why can't SRC reach DST?  Walk the path hop by hop (OK/FAIL; the first
    failure with its cause and the command that fixes it).  SRC and DST are
    namespaces, endpoints, aliases, addresses, 'host' or 'outside'."""
    if kernel:
        features = nsnet.kernel_features()
        if as_json:
            _print_json([f.to_dict() for f in features])
            return
        for f in features:
            mark = "yes" if f.available else "NO "
            line = f"{mark}  {f.name:<22} {f.used_for}"
            if not f.available:
                line += f"\n     missing ({f.detail}): {f.disables}"
            click.echo(line)
        return
    if not src or not dst:
        raise click.UsageError("give SRC and DST (or --kernel)")
    diag = nsnet.diagnose(_engine(settings), src, dst, int(family) if family else None)
    if as_json:
        _print_json(diag.to_dict())
    else:
        click.echo(f"nsnet doctor {src} -> {dst}")
        for hop in diag.hops:
            tag = f"v{hop.family} " if len(diag.families) > 1 or hop.family == 6 else ""
            click.echo(f"  {'OK  ' if hop.ok else 'FAIL'}  {tag}{hop.name:<20} {hop.where:<28} "
                       f"{hop.detail}")
        if diag.failure:
            click.echo(f"cause: {diag.failure.cause}")
            if diag.failure.fix:
                click.echo(f"fix:   {diag.failure.fix}")
        else:
            click.echo("every hop is OK")
    if not diag.ok:
        sys.exit(nsnet.CheckFailed.exit_code)


# --------------------------------------------------------------- cluster
@cli.group(cls=NsnetGroup)
def cluster() -> None:
    """Multi-host membership for overlay networks (cluster state in etcd)."""


_TLS = [click.option("--cacert", "ca_cert", type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle to verify the etcd members (https)."),
        click.option("--cert", type=click.Path(exists=True, dir_okay=False),
                     help="Client certificate for etcd."),
        click.option("--key", type=click.Path(exists=True, dir_okay=False),
                     help="Client key for etcd.")]


def _tls(func: Any) -> Any:
    for option in reversed(_TLS):
        func = option(func)
    return func


@cluster.command("join")
@click.option("--store", required=True, metavar="etcd://H1:2379,H2:2379,...",
              help="The etcd members.")
@click.option("--advertise", required=True, metavar="UNDERLAY_IP",
              help="This host's underlay address (its VXLAN endpoint).")
@click.option("--name", help="This host's name in the cluster (default: hostname).")
@click.option("--ttl", default=10, show_default=True,
              help="Liveness lease, seconds: a host silent this long is dead.")
@_tls
@pass_settings
def cluster_join(settings: Settings, store: str, advertise: str, name: str | None, ttl: int,
                 ca_cert: str | None, cert: str | None, key: str | None) -> None:
    """Join a cluster once; `nsnet cluster agent` keeps this host alive."""
    cfg = nsnet.cluster_join(store, advertise, state_dir=settings.state_dir,
                             host_netns=settings.host_netns, netns_dir=settings.netns_dir,
                             name=name, ttl=ttl, ca_cert=ca_cert, cert=cert, key=key)
    click.echo(f"joined {cfg.store} as {cfg.host} ({cfg.advertise}), lease {cfg.lease:x} "
               f"TTL {cfg.ttl}s")


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def cluster_status(settings: Settings, as_json: bool) -> None:
    """Hosts, their liveness and endpoints, and the store's health."""
    cfg, st = nsnet.cluster_status(state_dir=settings.state_dir,
                                   host_netns=settings.host_netns, netns_dir=settings.netns_dir)
    if as_json:
        _print_json({"store": st.store, "self": cfg.host, "quorum": st.quorum,
                     "members": [vars(m) for m in st.members],
                     "hosts": [vars(h) for h in st.hosts]})
    else:
        click.echo(f"store {st.store}: {'quorum' if st.quorum else 'NO QUORUM'}")
        _table(["MEMBER", "HEALTHY", "STATE"],
               [[m.endpoint, "yes" if m.healthy else "no", m.detail] for m in st.members])
        _table(["HOST", "ADVERTISE", "ALIVE", "ENDPOINTS"],
               [[h.name + (" (self)" if h.name == cfg.host else ""), h.advertise,
                 "yes" if h.alive else "no", str(h.endpoints)] for h in st.hosts])
    if not st.quorum:
        sys.exit(nsnet.StoreUnavailable.exit_code)


@cluster.command("leave")
@click.option("--force", is_flag=True, help="Even with overlay endpoints left.")
@pass_settings
def cluster_leave(settings: Settings, force: bool) -> None:
    """Leave the cluster, releasing this host's address blocks."""
    cfg = nsnet.cluster_leave(state_dir=settings.state_dir, host_netns=settings.host_netns,
                              netns_dir=settings.netns_dir, force=force)
    click.echo(f"left {cfg.store} ({cfg.host})")


@cluster.command("forget")
@click.argument("host")
@pass_settings
def cluster_forget(settings: Settings, host: str) -> None:
    """Declare a dead HOST gone, releasing its address blocks (refused while alive)."""
    nsnet.cluster_forget(host, state_dir=settings.state_dir, host_netns=settings.host_netns,
                         netns_dir=settings.netns_dir)
    click.echo(f"forgot {host}: its address blocks are free")


@cluster.command("agent")
@pass_settings
def cluster_agent(settings: Settings) -> None:
    """Keep this host alive in the cluster and its overlay networks converged
    (foreground; Ctrl-C or SIGTERM stops): renews the liveness lease,
    republishes this host's endpoints after an expiry, and programs each
    overlay network's FDB/neighbour entries from the cluster's records."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def report(detail: str) -> None:
        # a long-running process's log: each line says when (UTC)
        import time

        click.echo(f"{time.strftime('%H:%M:%S', time.gmtime())} nsnet: {detail}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        _engine(settings).overlay_agent(stop, report)


def main() -> None:
    cli(prog_name="nsnet")
