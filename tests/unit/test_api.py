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
