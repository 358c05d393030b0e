"""Running a batch's items beyond one process: the Ray executor (the ``[ray]`` extra).

``tl.Engine(executor=RayExecutor(...))`` runs ``run_many``'s items on Ray workers; the CLI
selects it with ``--executor ray|ray:auto|ray://HOST:PORT`` (:func:`executor_from_spec`).
Ray itself is imported only when an executor first starts its workers.
"""

from __future__ import annotations

from trellis.cluster.ray_executor import RayExecutor, executor_from_spec

__all__ = ["RayExecutor", "executor_from_spec"]
