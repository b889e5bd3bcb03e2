import nsnet


def test_public_api_is_guarded():
    # Changing the public surface must be deliberate: update this list with it.
    assert sorted(nsnet.__all__) == sorted([
        "AlreadyExists", "CheckFailed", "CheckResult", "Conflict", "ConnectOptions",
        "DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR", "Endpoint", "Engine", "InvalidInput",
        "KernelError", "LockTimeout", "Namespace", "Network", "NetworkSpec", "NotFound",
        "NsnetError", "PermissionDenied", "PoolExhausted", "StateError", "__version__",
        "check_ok", "format_route", "lab_down", "lab_up",
        "FakeFirewall", "FirewallDriver", "PortMap", "Published", "parse_ports",
        "install_cni_plugin", "Topology", "TopologySpec", "load_topology", "parse_topology",
        "render_graph", "topology_down", "topology_graph", "topology_plan", "topology_up",
        "Diagnosis", "diagnose", "kernel_features",
        "serve_docker_plugin",
        "ExplainSession", "lab_explain_printer",
        "StoreUnavailable", "cluster_agent", "cluster_forget", "cluster_join", "cluster_leave",
        "cluster_status",
        "Config", "DEFAULT_ETC_NETNS_DIR",
    ])
    for name in nsnet.__all__:
        assert hasattr(nsnet, name)


def test_every_error_has_a_distinct_meaning_and_code():
    codes = {cls.__name__: cls.exit_code for cls in (
        nsnet.InvalidInput, nsnet.NotFound, nsnet.AlreadyExists, nsnet.Conflict,
        nsnet.PoolExhausted, nsnet.PermissionDenied, nsnet.KernelError, nsnet.StateError,
        nsnet.LockTimeout, nsnet.StoreUnavailable)}
    assert len(set(codes.values())) == len(codes)
    assert all(issubclass(c, nsnet.NsnetError) for c in (nsnet.CheckFailed, nsnet.LockTimeout))


def test_cli_imports_only_the_public_api():
    import ast
    import pathlib

    src = pathlib.Path(nsnet.__file__).parent / "cli" / "main.py"
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nsnet"):
            assert node.module == "nsnet", node.module
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("nsnet.") for a in node.names)


def test_only_kernel_talks_netlink():
    import pathlib

    root = pathlib.Path(nsnet.__file__).parent
    for path in root.rglob("*.py"):
        if "kernel" in path.parts:
            continue
        text = path.read_text()
        assert "AF_NETLINK" not in text and "pyroute2" not in text and "setns" not in text, path


def test_docker_plugin_imports_only_the_public_api():
    import ast
    import pathlib

    for src in (pathlib.Path(nsnet.__file__).parent / "docker").glob("*.py"):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("nsnet."), (src, node.module)
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{src}: relative import outside nsnet.docker")


# --------------------------------------------------------------- layering
ENGINE_RESOURCES = {"namespaces", "networks", "endpoints", "ports", "probes", "links", "overlay"}
ENGINE_BELOW = {"context", "intents", "firewall_sync", "dns_sync"}


def _nsnet_imports(path) -> set[str]:
    """Absolute names of the nsnet modules ``path`` imports (relative ones resolved)."""
    import ast

    root = __import__("pathlib").Path(nsnet.__file__).parent
    package = ["nsnet", *path.relative_to(root).parent.parts]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}  # `from . import x`
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m == "nsnet" or m.startswith("nsnet.")}


def _engine_module(path):
    import pathlib

    return pathlib.Path(nsnet.__file__).parent / "engine" / f"{path}.py"


def test_engine_package_holds_the_layers():
    import pathlib

    names = {p.stem for p in (pathlib.Path(nsnet.__file__).parent / "engine").glob("*.py")}
    assert names == ENGINE_RESOURCES | ENGINE_BELOW | {"facade", "__init__"}, names


def test_resources_import_neither_the_facade_nor_each_other():
    for name in ENGINE_RESOURCES:
        got = {m for m in _nsnet_imports(_engine_module(name)) if m.startswith("nsnet.engine")}
        allowed = {"nsnet.engine"} | {f"nsnet.engine.{b}" for b in ENGINE_BELOW}
        bad = {m for m in got if m.rsplit(".", 1)[0] not in allowed and m not in allowed}
        assert not bad, (name, bad)


def test_what_is_below_the_resources_imports_no_resource():
    for name in ENGINE_BELOW:
        got = {m for m in _nsnet_imports(_engine_module(name)) if m.startswith("nsnet.engine.")}
        above = {f"nsnet.engine.{r}" for r in ENGINE_RESOURCES | {"facade"}}
        assert not {m for m in got if m in above or m.rsplit(".", 1)[0] in above}, (name, got)
    assert not {m for m in _nsnet_imports(_engine_module("context"))
                if m.startswith("nsnet.engine.")}


def test_reconcile_does_not_import_the_engine():
    import pathlib

    path = pathlib.Path(nsnet.__file__).parent / "reconcile.py"
    assert not {m for m in _nsnet_imports(path) if m.startswith("nsnet.engine")}


def test_engine_talks_to_the_kernel_only_through_kernel():
    import pathlib

    for path in (pathlib.Path(nsnet.__file__).parent / "engine").glob("*.py"):
        text = path.read_text()
        for word in ("import socket", "import ctypes", "import fcntl", "/proc/", "/sys/"):
            assert word not in text, (path, word)


def test_callers_use_narrow_engine_methods_not_its_handles():
    import pathlib
    import re

    root = pathlib.Path(nsnet.__file__).parent
    for rel in ("lab.py", "reconcile.py", "topology", "cni", "doctor", "cli", "docker"):
        paths = [root / rel] if rel.endswith(".py") else sorted((root / rel).rglob("*.py"))
        for path in paths:
            found = re.findall(r"\b(?:engine|eng)\.(?:store|rtnl|ctx)\b", path.read_text())
            assert not found, (path, found)


def test_connect_planning_reads_nothing_itself():
    """#15: connect is planned by a pure function of what was observed once
    (Endpoints.observe); it reaches neither the store, the kernel nor the
    context."""
    import ast

    tree = ast.parse(_engine_module("endpoints").read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "plan_connect"]
    names = {n.id for stmt in fn.body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    attrs = {n.attr for stmt in fn.body for n in ast.walk(stmt) if isinstance(n, ast.Attribute)}
    assert not names & {"k", "os", "time", "uuid", "self", "ctx", "store"}, names
    assert not attrs & {"store", "rtnl", "ctx", "snapshot", "ns_exists"}, attrs
