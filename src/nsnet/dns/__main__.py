"""``python -I -m nsnet.dns STATE_DIR [RESOLV_CONF...]``: the DNS server, as
the engine starts it; the RESOLV_CONF files are the host namespace's, the
first that exists wins (default /etc/resolv.conf)."""

import sys

from .server import serve

if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2:] or None))
