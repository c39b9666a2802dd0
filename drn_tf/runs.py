"""Run folders of ``drn-tf train`` and ``drn-tf adapt``: what a run records and when it resumes.

Checks a run's flags and paths before any work (:func:`validate_config`), decides between a
fresh start and resuming the run in ``--output`` (:func:`check_run_folder`: the flags saved in
``run.json`` must match, cosmetic ones aside), and starts a folder afresh
(:func:`start_run_folder`: ``--overwrite`` deletes exactly :data:`RUN_OUTPUTS`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from drn_tf.bundled import is_packaged
from drn_tf.files import atomic_path, unwritable_folder
from drn_tf.flags import flag_name
from drn_tf.frames import is_video
from drn_tf.models import VARIANTS, DRNConfig
from drn_tf.precision import resolve_precision
from drn_tf.settings import AdaptConfig, TrainConfig

# Flags that do not change what a run computes: a run resumes whatever they say. Every other
# flag must match the run's run.json.
# The strategy too: the global batch, hence the run, is the same on any number of devices.
COSMETIC_FLAGS = frozenset(
    {"output", "progress", "tensorboard", "cache_dir", "overwrite", "strategy", "cluster_timeout"}
)
RUN_FILE = "run.json"
# Everything a run writes into its folder; --overwrite deletes exactly these.
RUN_OUTPUTS = (
    RUN_FILE,
    "backup",
    "log.csv",
    "tensorboard",
    "model.keras",
    "latest.keras",
    "best.keras",
    "curves.png",
)


def _check_writable_folder(path: str, flag: str) -> None:
    """Fails unless ``path`` is a folder, or can be created as one, that we may write in."""
    found = unwritable_folder(path)
    if found is None:
        return
    where, problem = found
    if problem == "not a folder":
        what = "not a folder" if where == Path(path) else f"{where} is not a folder"
        raise ValueError(f"{flag} {path}: {what}")
    raise ValueError(f"{flag} {path}: cannot write in {where} (permission denied)")


RunConfig = TrainConfig | AdaptConfig


# The folder flags of each kind of run.
_FOLDER_FLAGS = {
    "train": ("train_dir", "val_dir"),
    "adapt": ("paired_dir", "unpaired_dir", "val_dir"),
}


def _folder_flags(config: RunConfig) -> tuple[str, ...]:
    return _FOLDER_FLAGS[_command(config)]


def validate_config(config: RunConfig) -> None:
    """Checks every setting of ``config`` (its ``check()``) and the paths it names, reading no
    image and writing nothing (an :class:`AdaptConfig`'s ``--patch-size`` is checked against
    the model's scale once the model is loaded).

    Raises:
        ValueError: the first problem found, in one line naming the flag (:class:`FlagError`
            for a wrong flag value), or ``--precision mixed_float16`` without a GPU
            (:func:`drn_tf.precision.resolve_precision`).
    """
    config.check()
    # Before the cluster, the run folder, the model and the images: mixed_float16 without a GPU.
    resolve_precision(config.precision, training=True)
    for name in _folder_flags(config):
        for folder in getattr(config, name):
            if name == "unpaired_dir" and is_video(folder) and Path(folder).is_file():
                continue  # footage: its frames are LR-only samples
            if not Path(folder).is_dir():
                problem = "not a folder" if Path(folder).exists() else "folder does not exist"
                raise ValueError(f"{flag_name(name)} {folder}: {problem}")
    adapting = isinstance(config, AdaptConfig)
    start = config.model if adapting else config.init
    if start is not None and not is_packaged(start) and not Path(start).is_file():
        raise ValueError(f"{'--model' if adapting else '--init'} {start}: file does not exist")
    _check_writable_folder(config.output, "--output")
    if config.cache_dir is not None:
        _check_writable_folder(config.cache_dir, "--cache-dir")


def _command(config: RunConfig) -> str:
    return "adapt" if isinstance(config, AdaptConfig) else "train"


def run_record(config: RunConfig) -> dict:
    """``config`` as saved in ``run.json``, with the ``command`` (``train`` or ``adapt``):
    folders and files as absolute paths, and the variant's preset sizes filled in, so that
    equal runs compare equal however spelt."""
    record = {"command": _command(config), **dataclasses.asdict(config)}
    for name in _folder_flags(config):
        record[name] = [str(Path(folder).resolve()) for folder in record[name]]
    if isinstance(config, AdaptConfig):
        if not is_packaged(config.model):
            record["model"] = str(Path(config.model).resolve())
    elif config.init is not None:
        record["init"] = str(Path(config.init).resolve())
    elif config.variant in VARIANTS:
        sizes = DRNConfig(config.variant, config.scale, config.n_blocks, config.n_feats)
        record["n_blocks"], record["n_feats"] = sizes.n_blocks, sizes.n_feats
    return record


def effective_steps_per_epoch(config: RunConfig) -> int:
    return min(config.steps_per_epoch, config.steps)


def check_run_folder(config: RunConfig) -> int | None:
    """Decides between a fresh run and resuming the run in ``config.output``.

    Returns ``None`` for a fresh start (no run there, or ``config.overwrite``), else the step
    the saved run resumes at (0 when it was killed before its first epoch ended).

    Raises:
        ValueError: the folder holds a run with other flags, or one without ``run.json``
            (written by drn-tf before 0.2, or not by drn-tf).
    """
    run = Path(config.output)
    if config.overwrite or not any((run / name).exists() for name in RUN_OUTPUTS):
        return None
    advice = "use a new --output or --overwrite"
    try:
        saved = json.loads((run / RUN_FILE).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{run} holds a run of unknown flags (no {RUN_FILE}; an older drn-tf?); {advice}"
        ) from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{run / RUN_FILE}: unreadable ({error}); {advice}") from None
    saved_command = saved.get("command", "train")  # run.json before drn-tf adapt had none
    if saved_command != _command(config):
        raise ValueError(f"{run} holds a drn-tf {saved_command} run; {advice}")
    current, defaults = run_record(config), run_record(type(config)())

    def shown(value) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    differences = [
        f"{flag_name(name)} {shown(value)} vs {shown(saved.get(name, defaults[name]))} saved"
        for name, value in current.items()
        if name not in COSMETIC_FLAGS and saved.get(name, defaults[name]) != value
    ]
    if differences:
        raise ValueError(f"{run} holds a different run ({', '.join(differences)}); {advice}")
    try:
        epochs = json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # killed before BackupAndRestore wrote anything: the run starts over
    return min(int(epochs) * effective_steps_per_epoch(config), config.steps)


def start_run_folder(config: RunConfig) -> None:
    """Deletes an old run for ``--overwrite`` and records ``config`` in ``run.json``."""
    run = Path(config.output)
    if config.overwrite:
        for name in RUN_OUTPUTS:
            path = run / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    with atomic_path(run / RUN_FILE) as temp:  # names the file on a full disk
        temp.write_text(json.dumps(run_record(config), indent=2) + "\n")
