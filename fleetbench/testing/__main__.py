"""``python -m fleetbench.testing``: serve a fake vendor (see :func:`._fake.main`)."""

from fleetbench.testing._fake import main

raise SystemExit(main())
