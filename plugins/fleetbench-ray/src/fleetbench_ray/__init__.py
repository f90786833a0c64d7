"""fleetbench executor plugin ``ray``: one fleet across a Ray cluster.

Select it with ``global_settings.executor: ray`` (or ``fleetbench run --executor ray``,
``fleetbench serve --executor ray``); ``global_settings.ray_address`` names the cluster
and ``ray_actors`` how many actors share the run. Ray is imported only when a run uses
this executor, so installing the plugin costs other commands nothing.
"""

from __future__ import annotations

from typing import Any

from fleetbench.errors import FleetbenchError
from fleetbench.plugin import Executor, ExecutorSpec, hookimpl

FLEETBENCH_PLUGIN_API_VERSION = 1

__all__ = ["FLEETBENCH_PLUGIN_API_VERSION", "RayExecutorError", "fleetbench_register_executors"]


class RayExecutorError(FleetbenchError):
    """The Ray cluster could not run the fleet: it cannot be reached, its nodes run
    another fleetbench, an actor failed, or an actor kept dying."""


def _ray_executor(plan: Any) -> Executor:
    from fleetbench_ray._executor import RayExecutor  # imports ray

    return RayExecutor(plan)


@hookimpl
def fleetbench_register_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("ray", _ray_executor,
                         "Ray async actors across a cluster: the plan sharded, limits divided, "
                         "results streamed back")]
