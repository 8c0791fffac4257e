"""``python -m offload``: the same as the ``offload`` command."""

from offload.cli import main

main()
