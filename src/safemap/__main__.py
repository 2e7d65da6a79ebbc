"""``python -m safemap``: the ``safemap`` command."""

from .cli.main import main

raise SystemExit(main())
