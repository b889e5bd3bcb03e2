"""HTTP sessions whose sockets live in a given network namespace.

nsnet never assumes the calling process sits in the host's namespace: the
engine takes the host namespace as a parameter, and so does the cluster
store.  The etcd members are reached over the host's underlay, so every TCP
connection to them must be created inside the host namespace.  A socket
keeps the namespace it was created in, so only connection set-up enters it
(nsnet.kernel.entered, this thread only); reading and writing happen from
wherever the caller is, watch threads included.
"""

from __future__ import annotations

from typing import Any


def netns_session(netns_path: str | None, verify: str | None = None,
                  cert: tuple[str, str] | None = None) -> Any:
    """A ``requests.Session`` connecting from ``netns_path`` (None: here)."""
    import requests

    session = requests.Session()
    # Not the environment's: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would
    # silently replace the --cacert given (requests prefers them to
    # session.verify), and HTTP(S)_PROXY would send underlay traffic to a proxy.
    session.trust_env = False
    if verify is not None:
        session.verify = verify
    if cert is not None:
        session.cert = cert
    if netns_path is None:
        return session
    adapter = _adapter(netns_path)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _adapter(netns_path: str) -> Any:
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    from ..kernel.netns import entered, open_netns

    ns = open_netns(netns_path)  # held open: the namespace outlives a rename/unmount

    class Conn(HTTPConnection):
        def _new_conn(self) -> Any:
            with entered(ns.fd):
                return super()._new_conn()

    class TLSConn(HTTPSConnection):
        def _new_conn(self) -> Any:
            with entered(ns.fd):
                return super()._new_conn()

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kw: Any) -> None:
            super().init_poolmanager(*args, **kw)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}

        def close(self) -> None:
            super().close()
            ns.close()

    return Adapter()
