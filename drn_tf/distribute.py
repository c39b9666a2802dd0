"""Training on several GPUs or machines: ``--strategy default|mirrored|multi_worker``.

* ``default``: no strategy object, one device (``tf.distribute.get_strategy()``).
* ``mirrored``: :class:`tf.distribute.MirroredStrategy` over this machine's GPUs, through
  ``model.fit``.
* ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy` over the machines that
  ``TF_CONFIG`` names. ``model.fit`` fails under it in Keras 3.15 (keras-team/keras#20585,
  ``../shared/docs/tensorflow-notes.md`` §9), so :func:`fit_multi_worker` runs the model's own
  ``train_step``/``test_step`` and the run's callbacks in a short loop of ours.

Each worker reads only its share of the training files (``shard`` of
:func:`drn_tf.training_images.load_pyramids`) and batches them at the per-replica batch,
``--batch-size`` divided by the number of replicas; :func:`fit_multi_worker` hands that dataset
to its worker's replicas as it is (``distribute_datasets_from_function``, auto-sharding off).

Every worker runs every callback, because saving reads variables through collectives that all
workers must join; only the chief writes the run folder, the others write into a temporary
folder (:func:`worker_folder`), the Keras/TF multi-worker convention. The run folder must be on
storage that every worker sees (NFS, a bucket mount): the other workers resume from the
chief's ``backup/``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.compiler.xla.tsl.protobuf.coordination_config_pb2 import CoordinatedJob
from tensorflow.python.eager import context

from drn_tf.metrics import PSNR, SSIM

STRATEGIES = ("default", "mirrored", "multi_worker")

# How long a multi-worker start waits for every worker of TF_CONFIG to join, by default (TF's own
# is an hour for the chief, forever for the others).
CLUSTER_TIMEOUT_S = 300

# What a collective raises when a worker of the cluster is gone or restarted.
_LOST_WORKER = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.FailedPreconditionError,
)


def read_tf_config(text: str | None) -> tuple[int, int]:
    """``(number of workers, this worker's position)`` of a ``TF_CONFIG`` value: JSON with
    ``cluster.worker`` (and optionally ``cluster.chief``, one address) as ``host:port`` lists,
    and ``task`` ``{"type": "worker" or "chief", "index": i}``. Position 0 is the chief.

    Raises:
        ValueError: one line naming TF_CONFIG and what is wrong with it.
    """
    if not text:
        raise ValueError(
            "--strategy multi_worker needs TF_CONFIG (the cluster and this worker's task), "
            "which is not set"
        )
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not JSON: {error}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError('TF_CONFIG needs a "cluster" and a "task" object')
    jobs = {name: cluster.get(name, []) for name in ("chief", "worker")}
    for name, addresses in jobs.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses
        ):
            raise ValueError(f'TF_CONFIG cluster "{name}" must be a list of "host:port" strings')
    if len(jobs["chief"]) > 1 or not jobs["chief"] + jobs["worker"]:
        raise ValueError('TF_CONFIG cluster needs "worker" addresses and at most one "chief"')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in jobs or not isinstance(index, int) or not 0 <= index < len(jobs[kind]):
        raise ValueError(
            f"TF_CONFIG task {json.dumps(task)} is not one of the cluster's "
            f"{len(jobs['chief'])} chief and {len(jobs['worker'])} worker address(es)"
        )
    return len(jobs["chief"]) + len(jobs["worker"]), index + len(jobs["chief"]) * (kind == "worker")


def make_strategy(
    name: str, cluster_timeout_s: int = CLUSTER_TIMEOUT_S
) -> tf.distribute.Strategy | None:
    """The strategy of ``--strategy name``; ``None`` for ``default`` (no strategy object).

    ``multi_worker`` reads ``TF_CONFIG`` first (a ``ValueError`` when it is missing or wrong)
    and must be created before TensorFlow runs anything else; it waits for every worker, for
    at most ``cluster_timeout_s`` seconds (then a one-line ``TimeoutError``)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "default":
        return None
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        if strategy.num_replicas_in_sync == 1:
            print("--strategy mirrored: one device found, so it runs one replica")
        return strategy
    text = os.environ.get("TF_CONFIG")
    workers, _ = read_tf_config(text)
    _bound_cluster_start(json.loads(text)["cluster"], cluster_timeout_s)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.DeadlineExceededError:
        raise TimeoutError(
            f"not all {workers} workers of TF_CONFIG joined within {cluster_timeout_s} s; start "
            "the same command on every machine of the cluster (and check their addresses)"
        ) from None


def _bound_cluster_start(cluster: dict, timeout_s: int) -> None:
    """Sets up TF's coordination service as MultiWorkerMirroredStrategy would (it keeps a
    configuration set before it), except that registration is a barrier with a timeout of
    ``timeout_s``: then every worker, the service's leader included, gets a
    ``DeadlineExceededError`` when a worker is missing, instead of waiting an hour or forever."""
    jobs = [(name, len(cluster[name])) for name in ("chief", "worker") if cluster.get(name)]
    eager = context.context()
    eager.configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0][0]}/replica:0/task:0",  # the strategy's own choice
        cluster_register_timeout_in_ms=timeout_s * 1000,
        coordinated_jobs=[CoordinatedJob(name=name, num_tasks=count) for name, count in jobs],
    )
    # Not an argument of configure_coordination_service, but a field of its config.
    eager.coordination_service.cluster_register_with_barrier = True


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run (always, unless a non-chief multi-worker task)."""
    return not is_multi_worker(strategy) or strategy.extended.should_checkpoint


def worker_folder() -> Path:
    """A fresh temporary folder for a non-chief worker's copy of the run, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="drn-tf-worker-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class Validation(keras.callbacks.Callback):
    """Adds ``val_psnr`` and ``val_ssim`` (Y channel, as :class:`drn_tf.metrics.PSNR`/``SSIM``)
    of ``val_ds`` (:func:`drn_tf.data.make_eval_dataset`) to the logs at each epoch end; list
    it before the callbacks that read them. For models under a strategy, in place of ``fit``'s
    validation, which hands a replica an empty share of a one-image batch and fails.

    Each worker scores its share of the images with its copy of the model, on one device; one
    all-reduce then sums the scores, so every worker logs the same numbers.
    """

    def __init__(self, val_ds: tf.data.Dataset, scale: int):
        super().__init__()
        self.val_ds = val_ds
        # Plain (not per-replica) variables: created here, outside any strategy scope.
        self.metrics = PSNR(shave=scale), SSIM(shave=scale)

        @tf.function(reduce_retracing=True)  # images differ in size
        def score(lr, hr):
            sr = self.model.primal(lr, training=False)[-1]
            for metric in self.metrics:
                metric.update_state(hr, sr)

        self.score = score

    def on_epoch_end(self, epoch, logs=None):
        strategy = self.model.distribute_strategy
        workers, position = worker_position(strategy)
        for metric in self.metrics:
            metric.reset_state()
        for lr, hr in self.val_ds.shard(workers, position):
            self.score(lr, hr)
        psnr, ssim = self.metrics
        local = tf.stack([psnr.total.value, ssim.total.value, psnr.count.value])
        # strategy.run hands this tensor to each local replica: divide, so the sum counts it once.
        local /= len(strategy.extended.worker_devices)
        total = strategy.reduce("SUM", strategy.run(tf.identity, (local,)), None).numpy()
        logs.update(val_psnr=total[0] / total[2], val_ssim=total[1] / total[2])


def worker_position(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """``(number of workers, this worker's position)``, the chief first; ``(1, 0)`` unless
    multi-worker."""
    if not is_multi_worker(strategy):
        return 1, 0
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    count = chiefs + (spec.num_tasks("worker") if "worker" in spec.jobs else 0)
    return count, resolver.task_id + chiefs * (resolver.task_type == "worker")


def fit_multi_worker(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    callbacks: Iterable[keras.callbacks.Callback],
    epochs: int,
    steps_per_epoch: int,
    verbose: int = 0,
    chief_backup: Path | None = None,
) -> None:
    """``model.fit(train_ds, epochs=…, steps_per_epoch=…, callbacks=…)`` for a model built and
    compiled under a MultiWorkerMirroredStrategy; every worker runs it.

    ``train_ds`` is this worker's own stream of per-replica batches (its share of the files,
    ``--batch-size`` / replicas samples each); the worker's replicas take its batches in turn,
    so a step trains on one global batch. The logged losses are averaged over all replicas. A
    non-chief worker first copies ``chief_backup`` into its ``BackupAndRestore`` folder, so that
    every worker resumes from the chief's checkpoint. ``verbose`` (a progress bar): 0 except on
    the chief.

    Raises:
        ConnectionError: a worker of the cluster died or restarted (the others stop too).
    """
    strategy = model.distribute_strategy
    callbacks = list(callbacks)
    try:
        # The chief has set up the run folder (--overwrite included) once every worker is here.
        strategy.reduce("SUM", strategy.run(tf.ones, ((),)), axis=None)
        if not is_chief(strategy) and chief_backup is not None and chief_backup.is_dir():
            for backup in callbacks:
                if isinstance(backup, keras.callbacks.BackupAndRestore):
                    shutil.copytree(chief_backup, backup.backup_dir, dirs_exist_ok=True)
        with strategy.scope():  # a restore builds the optimizer, which fit does in scope
            model.optimizer.build(model.trainable_variables)
        _loop(model, strategy, train_ds, callbacks, epochs, steps_per_epoch, verbose)
    except _LOST_WORKER as error:
        raise ConnectionError(
            f"the cluster lost a worker ({type(error).__name__}); start every worker again with "
            "the same command to resume from the last checkpoint"
        ) from None


def _loop(model, strategy, train_ds, callbacks, epochs, steps_per_epoch, verbose):
    callbacks = keras.callbacks.CallbackList(
        callbacks,
        add_progbar=verbose > 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    options = tf.data.Options()
    # The input is sharded already, by file: no automatic split on top.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    train_ds = train_ds.with_options(options)
    batches = iter(strategy.distribute_datasets_from_function(lambda _: train_ds))

    @tf.function
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        # As fit logs them: each replica's running means over its share, averaged.
        return {k: strategy.reduce("MEAN", tf.cast(v, "float32"), None) for k, v in logs.items()}

    model.stop_training = False
    callbacks.on_train_begin()
    initial_epoch, model._initial_epoch = model._initial_epoch or 0, None  # set by a restore
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(next(batches)).items()}
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
