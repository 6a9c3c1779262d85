"""Helper actors that live on the driver's node.

The curate job keeps one small bookkeeping actor, the ppl_bucket cutoff recorder (the stage
clock is files: curate.stage_clock). Left to Ray's scheduler it can land on any worker node,
and when that node leaves mid-run the job that would otherwise finish on the remaining nodes
dies with ActorDiedError at its last step. The driver's node lives exactly as long as the job,
so the actor is pinned there (hard affinity: the driver's node is always alive while it asks).
"""
from __future__ import annotations


def start_on_driver_node(cls: type, *args, **kwargs):
    """`cls` as a zero-CPU Ray actor on the node this process runs on; returns its handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=0)(cls).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(*args, **kwargs)
