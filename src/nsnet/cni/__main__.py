"""``python -m nsnet.cni``: the CNI plugin (what ``nsnet-cni`` runs)."""

from . import main

main()
