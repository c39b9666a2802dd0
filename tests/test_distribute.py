"""Tests for drn_tf.distribute: ``--strategy mirrored`` on two logical CPUs and ``multi_worker``
on two local worker processes, each against the same run on one device; a killed worker; a
worker whose cluster never completes; the ``TF_CONFIG`` checks; each worker's share of the files.

Expectations are the single-device run of the same flags (same global batch, same data), and a
float32 step for the mixed-precision steps.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import (
    SMALL,
    SUBPROCESS_ENV,
    as_flags,
    last_json,
    read_log,
    run_python,
    tiny_config,
    write_images,
)

from drn_tf import cli, distribute
from drn_tf.dual_regression import DualRegressionModel
from drn_tf.image_sets import load_eval_pairs
from drn_tf.metrics import psnr_y
from drn_tf.models import build_drn, build_duals
from drn_tf.settings import TrainConfig
from drn_tf.training import train
from drn_tf.training_images import load_lr_images, load_pyramids

pytestmark = pytest.mark.usefixtures("float32_policy")


def one_device_run(root: Path, config: dict) -> dict:
    """The run of ``config`` on one device (in this process): its log and final weights."""
    model = train(TrainConfig(**{**config, "output": str(root / "one-device")}))
    return {"log": read_log(root / "one-device" / "log.csv"), "weights": model.get_weights()}


def assert_same_rows(rows: list[dict], expected: list[dict], rel: float, psnr_abs: float):
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in expected]
    for row, want in zip(rows, expected, strict=True):
        for name in ("loss", "primal_loss", "dual_loss"):
            assert float(row[name]) == pytest.approx(float(want[name]), rel=rel), (name, row)
        if "val_psnr" in want:
            assert float(row["val_psnr"]) == pytest.approx(float(want["val_psnr"]), abs=psnr_abs)


# --------------------------------------------------------------------------------------------
# 1. TF_CONFIG and the --strategy flag
# --------------------------------------------------------------------------------------------

WORKERS = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}


@pytest.mark.parametrize(
    "value, problem",
    [
        (None, "needs TF_CONFIG"),
        ("{'cluster': 1}", "TF_CONFIG is not JSON"),
        (["a"], 'TF_CONFIG needs a "cluster" and a "task"'),
        ({"cluster": {"worker": ["10.0.0.1"]}, "task": {}}, '"worker" must be a list of "host'),
        ({"cluster": {"ps": ["h:1"]}, "task": {"type": "ps"}}, 'needs "worker" addresses'),
        ({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}, "is not one of the"),
        ({"cluster": WORKERS, "task": {"type": "chief", "index": 0}}, "is not one of the"),
    ],
)
def test_a_bad_tf_config_is_one_line_naming_it(value, problem):
    text = value if value is None or isinstance(value, str) else json.dumps(value)
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        distribute.read_tf_config(text)
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_tf_config_positions_put_the_chief_first():
    def position(cluster, kind, index):
        return distribute.read_tf_config(
            json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
        )

    assert position(WORKERS, "worker", 1) == (2, 1)
    with_chief = {"chief": ["10.0.0.9:2222"], **WORKERS}
    assert position(with_chief, "chief", 0) == (3, 0)
    assert position(with_chief, "worker", 0) == (3, 1)


@pytest.mark.parametrize(
    "tf_config, message",
    [(None, "needs TF_CONFIG"), ('{"cluster": {"worker": ', "TF_CONFIG is not JSON")],
)
def test_cli_multi_worker_without_a_good_tf_config_fails_before_reading_data(
    tmp_path, monkeypatch, capsys, tf_config, message
):
    def no_reading(*args, **kwargs):
        raise AssertionError("images were read")

    monkeypatch.setattr("drn_tf.training.load_pyramids", no_reading)
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = tiny_config(tmp_path, strategy="multi_worker")
    assert cli.main(["train", *as_flags(config)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("drn-tf train: error:") and message in error and "\n" not in error
    assert not Path(config["output"]).exists()


@pytest.mark.slow
def test_mirrored_on_one_device_says_so_and_is_the_one_device_run(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=2)
    expected = one_device_run(tmp_path, config)
    train(TrainConfig(**{**config, "strategy": "mirrored"}))
    out = capsys.readouterr().out
    assert "one device found, so it runs one replica" in out and "1 replica(s)" in out
    # Not sample for sample: see test_mirrored_run_logs_global_means_and_the_validation_psnr.
    assert_same_rows(read_log(Path(config["output"]) / "log.csv"), expected["log"], 2e-2, 0.1)


@pytest.mark.parametrize("loader", ["pyramids", "lr_images"])
def test_each_worker_reads_its_own_share_of_the_files(tmp_path, loader):
    write_images(tmp_path / "a", 3, seed=0, size=16)
    write_images(tmp_path / "b", 2, seed=1, size=16)
    folders = [tmp_path / "a", tmp_path / "b"]

    def paths(shard):
        if loader == "pyramids":
            found, _ = load_pyramids(folders, 2, 16, progress=False, shard=shard)
            return [pyramid.path for pyramid in found]
        return [path for path, _ in load_lr_images(folders, 4, shard=shard)[0]]

    every = paths(None)
    assert len(every) == 5
    shares = [paths((2, 0)), paths((2, 1))]
    # Disjoint, complete, and the same split on every worker: every other file in order.
    assert shares == [every[0::2], every[1::2]]
    with pytest.raises(ValueError, match="5 .* file\\(s\\) for 6 workers") as error:
        paths((6, 0))
    assert str(tmp_path / "a") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_adapt_runs_under_mirrored(tiny, tmp_path, capsys):
    from test_adapt import adapt_config

    config = adapt_config(tmp_path, tiny[1], steps=2, steps_per_epoch=1)
    assert cli.main(["adapt", *as_flags(config), "--strategy", "mirrored"]) == 0
    assert "1 replica(s)" in capsys.readouterr().out
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [row["step"] for row in rows] == ["1", "2"]
    assert all(np.isfinite(float(row[name])) for row in rows for name in ("loss", "loop_error"))
    adapted = keras.saving.load_model(tmp_path / "run" / "model.keras")
    pairs = zip(adapted.primal.get_weights(), tiny[0].primal.get_weights(), strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs)  # it was adapted


# --------------------------------------------------------------------------------------------
# 2. mirrored: two logical CPU replicas
# --------------------------------------------------------------------------------------------

MIRRORED_SCRIPT = """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    from drn_tf import training
    from drn_tf.models import build_drn, build_duals
    from drn_tf.dual_regression import DualRegressionModel
    from drn_tf.settings import TrainConfig

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": strategy.num_replicas_in_sync}

    # A whole run through train(): the same flags on one device and on the two replicas.
    config = json.loads(sys.argv[1])
    for name, on in (("one_device", None), ("mirrored", strategy)):
        output = config["output"] + "-" + name
        model = training.train(TrainConfig(**{**config, "output": output}), on)
        results[name] = {"log": output + "/log.csv", "weights": output + "/weights.npz",
                         "val_dir": config["val_dir"][0]}
        np.savez(output + "/weights.npz", *model.get_weights())

    # One SGD step of the same global batch: float32 on one device, mixed precision mirrored.
    SMALL = {"n_blocks": 1, "n_feats": 4}
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    targets = (rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32"),
               rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    dataset = tf.data.Dataset.from_tensors((lr, targets)).repeat()
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    initial = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL)).get_weights()


    def update(policy, on):
        keras.mixed_precision.set_global_policy(policy)
        with on.scope():
            model = DualRegressionModel(
                build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(1e-3))  # a LossScaleOptimizer in fp16
        model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
        kind = type(model.optimizer).__name__
        delta = np.concatenate([np.ravel(a - b) for a, b in zip(model.get_weights(), initial)])
        return delta, kind


    # A global batch the two replicas cannot share evenly is refused before any image is read.
    try:
        training.train(TrainConfig(**{**config, "batch_size": 3}), strategy)
    except ValueError as error:
        results["odd_batch"] = str(error)

    reference, _ = update("float32", tf.distribute.get_strategy())
    for policy in ("mixed_bfloat16", "mixed_float16"):
        delta, kind = update(policy, strategy)
        results[policy] = {
            "optimizer": kind,
            "relative_error": float(np.linalg.norm(delta - reference) / np.linalg.norm(reference)),
            "norm_ratio": float(np.linalg.norm(delta) / np.linalg.norm(reference)),
        }
    print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrored")
    config = tiny_config(root, steps=3)
    write_val = Path(config["val_dir"][0])
    # Three validation images: two replicas get uneven shares.
    for extra in ("img1.png", "img2.png"):
        (write_val / extra).write_bytes((write_val / "img0.png").read_bytes())
    result = run_python(MIRRORED_SCRIPT, json.dumps(config), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    results = last_json(result.stdout)
    assert results["replicas"] == 2
    return results


@pytest.mark.slow
def test_mirrored_refuses_a_batch_the_replicas_cannot_share(mirrored_results):
    assert mirrored_results["odd_batch"] == "--batch-size 3 is not a multiple of the 2 replicas"


def val_psnr_of(weights: list[np.ndarray], val_dir: str) -> float:
    """Mean Y-PSNR of the tiny model with ``weights`` on ``val_dir``, computed in numpy."""
    model = DualRegressionModel(build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
    model.set_weights(weights)
    scores = [
        psnr_y(model.primal(lr[None].astype("float32"))[-1][0].numpy(), hr, 4)
        for _, lr, hr in load_eval_pairs(val_dir, 4)
    ]
    return float(np.mean(scores))


@pytest.mark.slow
def test_mirrored_run_logs_global_means_and_the_validation_psnr(mirrored_results):
    one, mirrored = mirrored_results["one_device"], mirrored_results["mirrored"]
    rows = read_log(Path(mirrored["log"]))
    # Under a strategy Keras's fit draws its first batch for a symbolic build, so training sees
    # the dataset's next shuffled pass: other crops of the same images, close but not equal.
    # tests/test_dual_regression.py §5 checks the step itself on identical batches.
    assert_same_rows(rows, read_log(Path(one["log"])), 2e-2, 0.1)
    weights = np.load(mirrored["weights"])
    final = val_psnr_of([weights[name] for name in weights.files], mirrored["val_dir"])
    assert float(rows[-1]["val_psnr"]) == pytest.approx(final, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy, optimizer, tolerance",
    [("mixed_bfloat16", "SGD", 0.05), ("mixed_float16", "LossScaleOptimizer", 0.01)],
)
def test_mirrored_mixed_precision_step_is_the_float32_step(
    mirrored_results, policy, optimizer, tolerance
):
    # bfloat16 keeps 8 significant bits (0.4 %), float16 11; the loss scale, a power of two,
    # must be undone per replica, or the update shrinks 32768-fold.
    result = mirrored_results[policy]
    assert result["optimizer"] == optimizer
    assert result["norm_ratio"] == pytest.approx(1.0, abs=tolerance)
    assert result["relative_error"] < tolerance


# --------------------------------------------------------------------------------------------
# 3. multi_worker: two local worker processes
# --------------------------------------------------------------------------------------------

WORKER_SCRIPT = """
    import json
    import os
    import sys

    import keras
    import numpy as np

    from drn_tf import cli, distribute, precision

    # A GPU as far as --precision goes: mixed_float16 (loss scaling, its state in checkpoints)
    # runs on these CPU workers on purpose, where drn-tf train refuses it (CPUs emulate it).
    precision._has_gpu = lambda: True
    argv, die_at_epoch, weights = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    val_psnr = []


    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if index == 1 and epoch == die_at_epoch:
                os._exit(17)  # like kill -9: no clean-up, no goodbye to the chief

        def on_epoch_end(self, epoch, logs=None):
            val_psnr.append(logs.get("val_psnr"))

        def on_train_end(self, logs=None):
            np.savez(weights, *self.model.get_weights())


    fit = distribute.fit_multi_worker


    def watched(model, train_ds, callbacks, *args, **kwargs):
        return fit(model, train_ds, [*callbacks, Watch()], *args, **kwargs)


    distribute.fit_multi_worker = watched
    status = cli.main(argv)
    print(json.dumps({"val_psnr": val_psnr}), flush=True)
    sys.exit(status)
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_worker(argv: list[str], ports: list[int], index: int, root: Path, *args, **env):
    """``WORKER_SCRIPT`` of ``argv`` as worker ``index`` of a cluster on 127.0.0.1 ``ports``;
    ``(process, its weights file)``."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tf_config = {
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    }
    env = {**SUBPROCESS_ENV, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(tmp), **env}
    weights = root / f"weights-{index}.npz"
    command = [sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT), json.dumps(argv)]
    command += [*map(str, args or [-1]), str(weights)]
    return subprocess.Popen(command, env=env, text=True, **PIPES), weights


def run_workers(config: dict, root: Path, die_at_epoch: int = -1, timeout: float = 300):
    """Runs ``drn-tf train`` of ``config`` with ``--strategy multi_worker`` on two local worker
    processes; returns ``[(exit status, stdout, stderr, weights file)]`` per worker. Both are
    killed if they outlive ``timeout``."""
    ports = free_ports(2)
    argv = ["train", *as_flags({**config, "strategy": "multi_worker"})]
    workers = [start_worker(argv, ports, index, root, die_at_epoch) for index in range(2)]
    return wait_for(workers, timeout)


def wait_for(workers: list, timeout: float) -> list:
    """``[(exit status, stdout, stderr, weights file)]`` of ``start_worker`` processes, killed
    if they outlive ``timeout``."""
    deadline, results = time.monotonic() + timeout, []
    try:
        for process, weights in workers:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, out, err, weights))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a worker was still running after {timeout} s")
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
    if any("Could not start gRPC server" in err for _, _, err, _ in results):
        pytest.skip("this platform refuses local gRPC servers")
    return results


PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


@pytest.fixture(scope="module")
def multi_worker_run(tmp_path_factory):
    """The tiny run of 2 steps, 1 per epoch, with 3 validation images: on two workers and on
    one device. Its two training images are the patch size and are not augmented, so every
    global batch of 2 is both images whole, however shuffled: on two workers, each its own."""
    root = tmp_path_factory.mktemp("multi_worker")
    config = tiny_config(root, steps=2, steps_per_epoch=1, augment=False)
    config["train_dir"] = [str(write_images(root / "two", 2, seed=2, size=config["patch_size"]))]
    val_dir = Path(config["val_dir"][0])
    for extra in ("img1.png", "img2.png"):  # uneven shares: 2 and 1
        (val_dir / extra).write_bytes((val_dir / "img0.png").read_bytes())
    workers = run_workers(config, root)
    return {"root": root, "config": config, "workers": workers, "one": one_device_run(root, config)}


@pytest.mark.slow
def test_multi_worker_run_is_the_one_device_run(multi_worker_run):
    workers, one = multi_worker_run["workers"], multi_worker_run["one"]
    for position, (status, out, err, _) in enumerate(workers):
        assert status == 0, err[-3000:]
        # Each read one file; that the weights below match shows they read different ones.
        assert f"training on 1 images (worker {position} of 2: its share" in out
    run = Path(multi_worker_run["config"]["output"])
    assert_same_rows(read_log(run / "log.csv"), one["log"], 1e-5, 1e-4)
    for *_, weights in workers:
        got = np.load(weights)
        for name, want in zip(got.files, one["weights"], strict=True):
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_multi_worker_validation_is_the_same_number_on_every_worker(multi_worker_run):
    psnrs = [last_json(out)["val_psnr"] for _, out, _, _ in multi_worker_run["workers"]]
    assert len(psnrs[0]) == 2 and None not in psnrs[0]
    assert psnrs[0] == psnrs[1]  # exactly: one all-reduce of every worker's sums


@pytest.mark.slow
def test_only_the_chief_writes_the_run(multi_worker_run):
    root = multi_worker_run["root"]
    outputs = {p.name for p in Path(multi_worker_run["config"]["output"]).iterdir()}
    assert outputs == {p.name for p in (root / "one-device").iterdir()}
    assert list((root / "tmp").iterdir()) == []  # the other worker's folder is gone
    chief_out, other_out = (out for _, out, _, _ in multi_worker_run["workers"])
    assert "training on" in chief_out and "training on" in other_out


@pytest.mark.slow
def test_a_worker_whose_cluster_never_completes_stops_with_one_line(tmp_path):
    # Two clusters of two, each with one worker missing: the coordination service's leader
    # (worker 0) and a worker waiting for an absent leader (worker 1).
    config = {**tiny_config(tmp_path), "strategy": "multi_worker", "cluster_timeout": 5}
    argv = ["train", *as_flags(config)]
    started = time.monotonic()
    workers = [
        start_worker(argv, free_ports(2), index, tmp_path / str(index)) for index in range(2)
    ]
    for status, _, err, _ in wait_for(workers, timeout=240):
        assert status == 1, err[-3000:]
        # TensorFlow's C++ logs of the failed start may follow it: ours is its one line.
        ours = [line for line in err.splitlines() if line.startswith("drn-tf")]
        assert ours == [
            "drn-tf train: error: not all 2 workers of TF_CONFIG joined within 5 s; start the "
            "same command on every machine of the cluster (and check their addresses)"
        ], err[-3000:]
    assert not (tmp_path / "run").exists()
    print(f"both stopped {time.monotonic() - started:.0f} s after they started")


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Two mixed_float16 workers (loss scaling, its state in the checkpoint) for 6 steps, 2 per
    epoch; worker 1 dies as epoch 2 starts, after the chief's second checkpoint. Then both are
    started again with the same flags."""
    root = tmp_path_factory.mktemp("killed")
    config = tiny_config(root, steps=6, precision="mixed_float16")
    killed = run_workers(config, root, die_at_epoch=2)
    killed_log = read_log(Path(config["output"]) / "log.csv")
    resumed = run_workers(config, root)
    return {
        "root": root,
        "config": config,
        "killed": killed,
        "killed_log": killed_log,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_cleanly(killed_and_resumed):
    (chief, chief_out, chief_err, _), (other, *_) = killed_and_resumed["killed"]
    assert other == 17
    assert chief == 1, chief_err[-3000:]
    error = chief_err.strip().splitlines()[-1]
    assert error.startswith("drn-tf train: error: the cluster lost a worker"), chief_err[-3000:]
    assert "start every worker again" in error
    assert [row["step"] for row in killed_and_resumed["killed_log"]] == ["2", "4"]


@pytest.mark.slow
def test_restarted_workers_resume_at_the_last_checkpoint(killed_and_resumed):
    for status, _, err, _ in killed_and_resumed["resumed"]:
        assert status == 0, err[-3000:]
    chief_out = killed_and_resumed["resumed"][0][1]
    assert f"resuming run {killed_and_resumed['config']['output']} at step 4" in chief_out
    rows = read_log(Path(killed_and_resumed["config"]["output"]) / "log.csv")
    assert [(r["step"], r["resumed"]) for r in rows] == [("2", "0"), ("4", "0"), ("6", "1")]
    weights = [np.load(w) for *_, w in killed_and_resumed["resumed"]]
    for name in weights[0].files:  # the workers stayed in step
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
