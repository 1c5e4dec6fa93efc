"""``python -m declic`` is the ``declic`` command."""

from declic.cli import main

main()
