"""``python -m egsbench`` and ``accelerate launch -m egsbench``: the ``egsbench`` command line."""

from egsbench.benchmark.cli import main

raise SystemExit(main())
