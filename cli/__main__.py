"""``python -m usher.cli``: the ``usher`` command."""

from usher.cli import main

main()
