"""nsnet: Docker's bridge networking, done right, in Python.

The public API: an :class:`Engine` bound to a host network namespace, the
data model it returns, and one exception tree.  The CLI uses nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

# Names are imported on first use (PEP 562), so a program that needs one
# corner -- the CNI plugin answering VERSION, the DNS server -- does not pay
# for the engine, the kernel layer and the firewall at start-up.
_WHERE = {
    "engine": ("CheckResult", "Engine", "check_ok"),
    # the defaults from config, not engine: the CLI's options show them
    # without importing the engine (nsnet --help)
    "config": ("Config", "DEFAULT_ETC_NETNS_DIR", "DEFAULT_NETNS_DIR", "DEFAULT_STATE_DIR"),
    "errors": ("AlreadyExists", "CheckFailed", "Conflict", "InvalidInput", "KernelError",
               "LockTimeout", "NotFound", "NsnetError", "PermissionDenied", "PoolExhausted",
               "StateError", "StoreUnavailable"),
    "cluster.api": ("cluster_agent", "cluster_forget", "cluster_join", "cluster_leave",
                    "cluster_status"),
    "firewall": ("FakeFirewall", "FirewallDriver"),
    "cni.install": ("install_cni_plugin",),
    "docker": ("serve_docker_plugin",),
    "topology": ("Topology", "TopologySpec", "load_topology", "parse_topology", "topology_up",
                 "topology_down", "topology_plan", "topology_graph", "render_graph"),
    "lab": ("format_route", "lab_down", "lab_up"),
    "explain": ("ExplainSession", "lab_explain_printer"),
    "doctor": ("Diagnosis", "diagnose", "kernel_features"),
    "model": ("ConnectOptions", "Endpoint", "Namespace", "Network", "NetworkSpec", "PortMap",
              "Published", "parse_ports"),
}
__getattr__ = lazy_names(__name__, _WHERE)


if TYPE_CHECKING:  # for type checkers and readers: the same names, eagerly
    from .cluster.api import (
        cluster_agent,
        cluster_forget,
        cluster_join,
        cluster_leave,
        cluster_status,
    )
    from .cni.install import install_cni_plugin
    from .config import DEFAULT_ETC_NETNS_DIR, DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR, Config
    from .docker import serve_docker_plugin
    from .doctor import Diagnosis, diagnose, kernel_features
    from .engine import CheckResult, Engine, check_ok
    from .errors import (
        AlreadyExists,
        CheckFailed,
        Conflict,
        InvalidInput,
        KernelError,
        LockTimeout,
        NotFound,
        NsnetError,
        PermissionDenied,
        PoolExhausted,
        StateError,
        StoreUnavailable,
    )
    from .explain import ExplainSession, lab_explain_printer
    from .firewall import FakeFirewall, FirewallDriver
    from .lab import format_route, lab_down, lab_up
    from .model import (
        ConnectOptions,
        Endpoint,
        Namespace,
        Network,
        NetworkSpec,
        PortMap,
        Published,
        parse_ports,
    )
    from .topology import (
        Topology,
        TopologySpec,
        load_topology,
        parse_topology,
        render_graph,
        topology_down,
        topology_graph,
        topology_plan,
        topology_up,
    )

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ETC_NETNS_DIR",
    "DEFAULT_NETNS_DIR",
    "DEFAULT_STATE_DIR",
    "AlreadyExists",
    "CheckFailed",
    "CheckResult",
    "Config",
    "Conflict",
    "ConnectOptions",
    "Diagnosis",
    "Endpoint",
    "Engine",
    "ExplainSession",
    "FakeFirewall",
    "FirewallDriver",
    "InvalidInput",
    "KernelError",
    "LockTimeout",
    "Namespace",
    "Network",
    "NetworkSpec",
    "NotFound",
    "NsnetError",
    "PermissionDenied",
    "PoolExhausted",
    "PortMap",
    "Published",
    "StateError",
    "StoreUnavailable",
    "Topology",
    "TopologySpec",
    "__version__",
    "check_ok",
    "cluster_agent",
    "cluster_forget",
    "cluster_join",
    "cluster_leave",
    "cluster_status",
    "diagnose",
    "format_route",
    "install_cni_plugin",
    "kernel_features",
    "lab_down",
    "lab_explain_printer",
    "lab_up",
    "load_topology",
    "parse_ports",
    "parse_topology",
    "render_graph",
    "serve_docker_plugin",
    "topology_down",
    "topology_graph",
    "topology_plan",
    "topology_up",
]
