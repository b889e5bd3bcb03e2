"""``python -m nsnet.dns STATE_DIR``: the DNS server, as the engine starts it."""

import sys

from .server import serve

if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
