"""Where training runs: the tf.distribute strategy named by `train.distribute`, and its rules.

`none` is one process on the default strategy (nothing here changes a thing). `mirrored`
is `MirroredStrategy` over this machine's devices. `multi_worker` is
`MultiWorkerMirroredStrategy`, one process per worker, configured by the standard `TF_CONFIG`.

The global batch (`train.batch_size`) keeps its meaning whatever the number of replicas:
each global batch is split into equal per-replica batches (global / replicas), the gradients
are summed over replicas from per-replica losses divided by the replica count, so one
optimizer step sees the mean over the global batch, as in one process; steps per epoch, the
learning-rate schedule and the KL warm-up count global steps, as in one process.

Only the chief writes files: other workers take part in every collective (saving a
checkpoint reads synchronised variables, which is a collective) but write to a temporary
directory that is then removed. TensorFlow is imported only when a strategy is built, so
the stage can read `TF_CONFIG` before loading it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("none", "mirrored", "multi_worker")
TF_CONFIG_HELP = "see docs/distributed.md, or set train.distribute: none"


class DistributeError(ValueError):
    """A TF_CONFIG or a batch size that the chosen strategy cannot use."""


# --- TF_CONFIG ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """The parts of TF_CONFIG training needs: the cluster's tasks and this process's task."""

    tasks: dict[str, list[str]]  # job name ("chief", "worker") -> host:port addresses
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has no chief (TensorFlow's rule)."""
        if "chief" in self.tasks:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def workers(self) -> int:
        return sum(len(self.tasks.get(job, [])) for job in ("chief", "worker"))


def parse_tf_config(text: str | None) -> Cluster:
    """Validate TF_CONFIG for MultiWorkerMirroredStrategy, naming what is wrong."""
    if not text:
        raise DistributeError(f"train.distribute: multi_worker needs TF_CONFIG in the "
                              f"environment (cluster + task); {TF_CONFIG_HELP}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise DistributeError(f"TF_CONFIG: not valid JSON ({err}); {TF_CONFIG_HELP}") from None
    if not isinstance(config, dict):
        raise DistributeError(f"TF_CONFIG: must be a JSON object; {TF_CONFIG_HELP}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise DistributeError(f"TF_CONFIG: needs both 'cluster' and 'task' objects; "
                              f"{TF_CONFIG_HELP}")
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise DistributeError(f"TF_CONFIG: cluster jobs {unknown} are not used by "
                              f"MultiWorkerMirroredStrategy; use 'chief' and 'worker'")
    for job, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(_is_address(a) for a in addresses)):
            raise DistributeError(f"TF_CONFIG: cluster.{job} must be a non-empty list of "
                                  f"'host:port' strings, got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise DistributeError("TF_CONFIG: cluster.chief holds at most one address")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise DistributeError(f"TF_CONFIG: task.type {task_type!r} is not a job of the "
                              f"cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(cluster[task_type])):
        raise DistributeError(f"TF_CONFIG: task.index {index!r} is not in "
                              f"0..{len(cluster[task_type]) - 1} for job {task_type!r}")
    return Cluster({job: list(a) for job, a in cluster.items()}, task_type, index)


def _is_address(value: Any) -> bool:
    host, _, port = str(value).rpartition(":")
    return isinstance(value, str) and bool(host) and port.isdigit() and 0 < int(port) < 65536


def tf_config(workers: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` of a cluster of `workers` (host:port each)."""
    return json.dumps({"cluster": {"worker": list(workers)},
                       "task": {"type": "worker", "index": index}})


def is_chief(kind: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process writes outputs and logs: always, unless it is a non-chief worker."""
    if kind != "multi_worker":
        return True
    return parse_tf_config(environ.get("TF_CONFIG")).is_chief


# --- the strategy --------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """The strategy training runs under (None: the default one) and this process's role."""

    kind: str
    strategy: Any = None
    is_chief: bool = True

    @property
    def replicas(self) -> int:
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    def scope(self):
        """The strategy's scope, where the model and optimizer variables must be created."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()


ONE_PROCESS = Placement("none")  # train.distribute: none


def place(kind: str, collective_timeout_s: float,
          environ: Mapping[str, str] = os.environ) -> Placement:
    """Build the strategy; call it before any other TensorFlow op (multi_worker needs that)."""
    if kind not in KINDS:
        raise DistributeError(f"train.distribute: {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "none":
        return ONE_PROCESS
    import tensorflow as tf

    if kind == "mirrored":  # every GPU, else every (logical) CPU device
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return Placement(kind, tf.distribute.MirroredStrategy([d.name for d in devices]))
    cluster = parse_tf_config(environ.get("TF_CONFIG"))
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
        timeout_seconds=float(collective_timeout_s),  # a dead peer fails the step, not hangs it
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return Placement(kind, strategy, cluster.is_chief)


def per_replica_batch(global_batch: int, replicas: int, what: str = "train.batch_size") -> int:
    """Images each replica sees per step; the global batch must split evenly."""
    if global_batch % replicas:
        raise DistributeError(f"{what}: {global_batch} does not split evenly over {replicas} "
                              f"replicas; use a multiple of {replicas}")
    return global_batch // replicas


def check_batches(train_batch: int, eval_batch: int, val_images: int, replicas: int) -> None:
    """Every training and validation batch must split into equal per-replica batches, so the
    mean over replicas of per-replica means is the mean over the batch."""
    per_replica_batch(train_batch, replicas)
    per_replica_batch(eval_batch, replicas, "the validation batch")
    per_replica_batch(val_images, replicas, "data.val_size")


def distribute_batches(dataset, placement: Placement):
    """Global batches as the strategy expects them: every worker builds the same pipeline
    and keeps its share of each batch (DATA sharding: the arrays are in memory, not files)."""
    if placement.strategy is None:
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """What a step raises when a peer died: its heartbeats stopped, or a collective timed out."""
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def describe_lost_worker(err: BaseException) -> str:
    """One line for a lost peer: what TensorFlow said and how to go on."""
    message = " ".join(getattr(err, "message", str(err)).split())[:300]
    return (f"a worker was lost mid-training ({type(err).__name__}: {message}); rerun every "
            "worker to resume from the chief's last checkpoint")


# --- inside a replica (model.train_step / test_step) ---------------------------------------

def replica_share(objective):
    """This replica's part of the loss: gradients are summed over replicas, so divide by
    their number to get the gradient of the global-batch mean (identity with one replica)."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return objective if replicas == 1 else objective / replicas


def reducible_metric(value):
    """A step's metric in the shape Keras' fit can average over workers.

    Keras 3 reduces per-replica step outputs with `strategy.reduce(MEAN, value, axis=0)`,
    which fails on a scalar under MultiWorkerMirroredStrategy ("Invalid reduction dimension 0
    for input with 0 dimensions", tensorflow/tensorflow#72388); a shape-[1] value reduces to
    the scalar mean over replicas. The epoch's logs are read from the metrics themselves
    (summed totals and counts over every replica), so they are per image either way.
    """
    import tensorflow as tf

    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return tf.reshape(value, [1])
    return value


# --- files ---------------------------------------------------------------------------------

def write_on_chief(path: Path, write: Callable[[Path], None], placement: Placement) -> None:
    """Run `write(path)` on the chief; elsewhere write to a temporary directory, then drop it.

    Every worker must write: reading synchronised variables is a collective operation.
    """
    if placement.is_chief:
        write(path)
        return
    with tempfile.TemporaryDirectory(prefix="mnist-vae-worker-") as scratch:
        write(Path(scratch) / path.name)
