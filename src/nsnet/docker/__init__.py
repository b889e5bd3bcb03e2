"""Docker's remote network and IPAM driver: ``docker network create -d nsnet
--ipam-driver nsnet`` makes an ordinary nsnet network.

Docker discovers the plugin by its socket, ``/run/docker/plugins/nsnet.sock``
(the default of ``nsnet docker-plugin``).  Only nsnet's public API is used.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SOCKET", "serve_docker_plugin"]

DEFAULT_SOCKET = "/run/docker/plugins/nsnet.sock"


def serve_docker_plugin(socket_path: str = DEFAULT_SOCKET, host_netns: str | None = None,
                        state_dir: str | None = None, netns_dir: str | None = None,
                        etc_netns_dir: str | None = None) -> None:
    """Serve Docker's NetworkDriver and IpamDriver on ``socket_path`` until
    SIGTERM; records live in ``STATE_DIR/docker-plugin``."""
    from nsnet import DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR, Engine

    from .driver import Driver, default_store_dir
    from .server import serve
    from .store import PluginStore

    state = state_dir or DEFAULT_STATE_DIR
    engine_args = {"host_netns": host_netns, "state_dir": state,
                   "netns_dir": netns_dir or DEFAULT_NETNS_DIR}
    if etc_netns_dir:
        engine_args["etc_netns_dir"] = etc_netns_dir
    # fail now (root? host namespace?), not on Docker's first call
    Engine.open(**engine_args).close()
    store = PluginStore(default_store_dir(state))
    try:
        serve(socket_path, Driver(lambda: Engine.open(**engine_args), store))
    finally:
        store.close()
