"""One local Ray cluster for the whole test session (starting one takes seconds).

2 CPUs, no dashboard, no usage stats, no token auth, its files under the session's tmp
folder, and every address on 127.0.0.1. The cluster's processes inherit this process's
environment at start-up, which is how the actors get :data:`ray_support.NODE_KEY_ENV`.
(The ``host`` fixture, the installed plugins, comes from ``plugins/conftest.py``.)
"""

from __future__ import annotations

import os

# Read when Ray is imported: a cluster of this machine only, whose nodes are addressed
# as 127.0.0.1 (Ray otherwise advertises the machine's routable address, even for a
# local cluster), so that every byte the tests send stays on the loopback interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import logging
from collections.abc import Iterator

import pytest
import ray
from ray_support import KEY, NODE_KEY_ENV

OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""Enough for the tests' batches; Ray's default reserves 30 % of the machine's memory."""
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               NODE_KEY_ENV: KEY}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's cluster; yields its GCS address (for driver subprocesses)."""
    temp_dir = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CLUSTER_ENV.items():
            patch.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp_dir),
                 object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                 log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
