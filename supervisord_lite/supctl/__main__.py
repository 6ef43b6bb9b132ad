"""``python -m supervisord_lite.supctl``: the same as the ``supctl`` command."""

from .main import main

main()
