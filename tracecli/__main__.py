"""``python -m tracecli ...``: the same as the ``trace`` command."""

from tracecli.main import main

main()
