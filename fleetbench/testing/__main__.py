"""``python -m fleetbench.testing``: serve a fake vendor (see :func:`._fake.main`)."""

from fleetbench.testing._process import main

raise SystemExit(main())
