"""``python -m downsize.cli``: the same as the ``downsize`` command."""

from . import main

main()
