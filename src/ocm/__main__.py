"""``python -m ocm``: the same as the ``ocm`` console script."""

from ocm.cli import main

raise SystemExit(main())
