"""Settings as dataclasses whose fields double as command-line flags, and the runner that every
command (``drn-tf``, ``python -m export.<format>``, ``python -m benchmarks.<name>``) shares.

A field ``batch_size: int = setting(32, "…")`` is the flag ``--batch-size`` (default 32); a
``bool`` field is ``--augment`` / ``--no-augment``; a ``list`` field takes one or more values.
Every command also takes ``-v/--verbose`` (TensorFlow's own log lines, hidden by default).
This module imports no TensorFlow, so ``--help`` and usage errors are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.abc
import importlib.util
import inspect
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import typing
import warnings
from collections.abc import Callable, Sequence

from drn_tf.precision import TRAINING_PRECISIONS


def setting(default, help: str, choices: Sequence | None = None, **kwargs):
    """A dataclass field that is also a command-line flag with ``help`` (and, if given, only
    the values ``choices``)."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


class UsageError(Exception):
    """Wrong flags or arguments: one line and exit status 2."""


class FlagError(UsageError, ValueError):
    """A wrong flag value found by library code (exit status 2 on the command line); callers
    of the library may catch it as the ``ValueError`` it also is."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def _flag_type(kind) -> tuple[type, bool]:
    """``(element type, is_list)`` of a field annotation such as ``int | None`` or ``list[str]``."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is list:
        return (args[0] if args else str), True
    base = args[0] if args else kind
    if typing.get_origin(base) is list:
        return (typing.get_args(base) or (str,))[0], True
    return base, False


def _description(config_cls: type) -> str:
    """The first paragraph of the class docstring; none for the signature that ``dataclass``
    writes into a class without a docstring (a repr is no help text)."""
    doc = inspect.cleandoc(config_cls.__doc__ or "")
    return "" if doc.startswith(f"{config_cls.__name__}(") else doc.split("\n\n")[0]


def _plain(value) -> str:
    """A default as a user would type it: ``a b`` for a list, not ``['a', 'b']``."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# The -v/--verbose value's name in the namespace, apart from any field called `verbose`.
_VERBOSE = "_verbose_logs"


def build_parser(
    config_cls: type, prog: str, positionals: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``config_cls``.

    ``positionals`` names the plain arguments the command takes (``"INPUT"``), if any. The
    class docstring's first paragraph is the description. ``-v/--verbose`` is added too (only
    ``-v`` when a field is itself called ``verbose``).
    """
    # A short usage line: the flags are listed below it, one by one.
    usage = f"%(prog)s [flags]{f' [{positionals} ...]' if positionals else ''}"
    parser = _Parser(
        prog=prog, usage=usage, description=_description(config_cls), allow_abbrev=False
    )
    if positionals:
        parser.add_argument("positionals", nargs="*", metavar=positionals)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        name = "--" + field.name.replace("_", "-")
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        help_text = field.metadata.get("help", "")
        choices = field.metadata.get("choices")
        element, is_list = _flag_type(hints[field.name])
        if element is bool and not is_list:
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=default,
                help=help_text + f" (default: {'on' if default else 'off'})",
            )  # fmt: skip
            continue
        if default not in (None, [], ""):
            help_text += f" (default: {_plain(default)})"
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else field.name.upper()
        if is_list:
            parser.add_argument(
                name, nargs="+", action="extend", type=element, default=None, choices=choices,
                metavar=metavar, help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                name, type=element, default=default, choices=choices, metavar=metavar,
                help=help_text,
            )  # fmt: skip
    parser.add_argument(
        "-v",
        "--verbose",
        dest=_VERBOSE,
        action="store_true",
        help="Show TensorFlow's own log lines (hidden by default).",
    )
    return parser


def parse_config(
    config_cls: type, argv: Sequence[str], prog: str, positionals: str | None = None
) -> tuple[typing.Any, list[str], bool]:
    """Parses ``argv`` into ``(config_cls instance, positional arguments, verbose)``.

    Flags and positional arguments may come in any order (``a.png --output o b.png``).
    Raises :class:`UsageError` on a wrong flag or value.
    """
    parser = build_parser(config_cls, prog, positionals)
    namespace = parser.parse_intermixed_args(list(argv))
    values = vars(namespace)
    extra = values.pop("positionals", [])
    verbose = values.pop(_VERBOSE)
    for field in dataclasses.fields(config_cls):
        if values[field.name] is None and field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()
    return config_cls(**values), extra, verbose


# TensorFlow's C++ log lines (absl format: `I0000 00:00:… port.cc:153] …`, absl's notice that
# logging is not initialised yet, LiteRT's delegate notices and its quantizer's settings).
_TF_LOG_LINE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|INFO: (?:Created|Initialized) TensorFlow Lite|fully_quantize: \d)"
)


def tensorflow_logs_hidden() -> bool:
    """Whether :func:`quiet_tensorflow` (or the environment) asked for quiet TensorFlow."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("0", "1")


@contextlib.contextmanager
def without_tensorflow_log_lines() -> typing.Iterator[None]:
    """Holds back everything written to file descriptor 2 (C++ code included), then passes on
    all of it but TensorFlow's log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            sys.stderr.write("".join(
                line for line in text.splitlines(keepends=True) if not _TF_LOG_LINE.match(line)
            ))  # fmt: skip


class _QuietLoader(importlib.abc.Loader):
    """Runs the ``tensorflow`` package's import without its start-up log lines."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the package sees its own
        with without_tensorflow_log_lines():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with :class:`_QuietLoader` around its real loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hides TensorFlow's C++ and Python log lines unless ``verbose``; call before the first
    ``import tensorflow`` (anywhere, Keras's included), which it does not do itself.

    ``TF_CPP_MIN_LOG_LEVEL=3`` hides what TensorFlow logs once running, but not the oneDNN
    notice that its libraries print while loading, whatever the level: those lines are held
    back from the import itself. A level set in the environment is kept unless ``verbose``.
    """
    finders = [f for f in sys.meta_path if isinstance(f, _QuietTensorFlowFinder)]
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        logging.getLogger("tensorflow").setLevel(logging.NOTSET)
        for finder in finders:
            sys.meta_path.remove(finder)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not finders:
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


#: The stop signals received since the running command started (see :func:`check_interrupted`).
_received: list[int] = []


def _raise_interrupt(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raises ``KeyboardInterrupt`` if Ctrl-C or SIGTERM reached the running command, even when
    the ``KeyboardInterrupt`` its handler raised was lost: raised inside a finalizer (Python
    then prints "Exception ignored" and goes on) or caught by a library. Long work calls it
    between stages and before moving a result into place."""
    if _received:
        raise KeyboardInterrupt


def _drop_lost_interrupts(unraisable) -> None:
    """``sys.unraisablehook`` while a command runs: a ``KeyboardInterrupt`` raised in a
    finalizer is recorded in ``_received`` (and acted on), not printed as a traceback."""
    if not (_received or isinstance(unraisable.exc_value, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def _quiet_after_interrupt(excepthook, kind, value, traceback) -> None:
    """``sys.excepthook`` while a command runs: after Ctrl-C or SIGTERM, the tracebacks that C
    extensions print (``PyErr_Print``) when the ``KeyboardInterrupt`` broke a call back into
    Python (TensorFlow: "SystemError: <built-in function __import__> returned a result with
    an exception set") are the interrupt's doing: not shown."""
    if not _received:
        excepthook(kind, value, traceback)


def _show_warning(prog: str, message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` while a command runs: one line, without the source line that
    Python's own prints (numpy's RuntimeWarning, PIL's DecompressionBombWarning, …)."""
    text = " ".join(str(message).split())
    print(f"{prog}: warning: {text} ({category.__name__})", file=file or sys.stderr)


def _print_usage_error(prog: str, error: UsageError) -> None:
    print(f"{prog}: {error}\n(see {prog} --help)", file=sys.stderr)


def run_command(
    prog: str,
    config_cls: type,
    function: Callable[[typing.Any, list[str]], None],
    argv: Sequence[str],
    positionals: str | None = None,
    interrupted: str = "interrupted",
) -> int:
    """Parses ``argv`` into ``config_cls`` and runs ``function(config, positionals)``.

    Returns the exit status: 0 on success; 2 on a usage error (one line and a hint to
    ``--help``); 1 on a library error (``ValueError``, ``OSError``, ``ImportError``: one line,
    no traceback); 130 on Ctrl-C or SIGTERM, after printing ``interrupted``. TensorFlow's logs
    are hidden (:func:`quiet_tensorflow`) unless ``-v`` is given, so ``function`` should import
    TensorFlow itself rather than at module level.
    """
    try:
        config, extra, verbose = parse_config(config_cls, argv, prog, positionals)
        if extra and not positionals:
            raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    except UsageError as error:
        _print_usage_error(prog, error)
        return 2
    except SystemExit as done:  # --help printed
        return int(done.code or 0)
    quiet_tensorflow(verbose)
    # SIGTERM (kill, a scheduler's stop) ends the command like Ctrl-C, so `finally` blocks run
    # and no temporary file is left; handlers can only be set from the main thread. Both are
    # recorded too, so that an interrupt lost in a finalizer still stops the command. SIGINT
    # inherited as ignored (a background job) stays ignored.
    stops = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        stops.append(signal.SIGINT)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_interrupt) for s in stops} if main_thread else {}
    sys.unraisablehook, unraisablehook = _drop_lost_interrupts, sys.unraisablehook
    excepthook = sys.excepthook
    sys.excepthook = functools.partial(_quiet_after_interrupt, excepthook)
    _received.clear()
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.showwarning = functools.partial(_show_warning, prog)
            function(config, extra)
        check_interrupted()
    except UsageError as error:
        _print_usage_error(prog, error)
        return 2
    except BaseException as error:
        # After an interrupt, whatever failed (a C extension turns a KeyboardInterrupt raised
        # in its call back into Python into another error) failed because of it.
        if _received or isinstance(error, KeyboardInterrupt):
            print(f"\n{prog}: {interrupted}", file=sys.stderr)
            return 130
        if not isinstance(error, (ValueError, OSError, ImportError)):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        _received.clear()
        sys.unraisablehook, sys.excepthook = unraisablehook, excepthook
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    return 0


# --- settings of library functions that commands expose as flags --------------------------


#: The model variants (drn_tf.models uses these; here so that flags are checked without it).
VARIANTS = ("drn-s", "drn-l")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def unpaired_count(batch_size: int, unpaired_ratio: float) -> int:
    """LR-only samples per batch: ``round(ρ · batch_size)`` (halves up), which must leave at least
    one sample of each kind.

    Raises:
        FlagError: naming ``--unpaired-ratio`` / ``--batch-size`` when that is not possible.
    """
    if not 0 < unpaired_ratio < 1:
        raise FlagError(
            f"--unpaired-ratio must be more than 0 and less than 1, got {unpaired_ratio}"
        )
    count = math.floor(unpaired_ratio * batch_size + 0.5)
    if not 1 <= count <= batch_size - 1:
        raise FlagError(
            f"--unpaired-ratio {unpaired_ratio} of --batch-size {batch_size} gives {count} "
            "LR-only sample(s) per batch; each batch needs both kinds (raise the batch size)"
        )
    return count


def check_patch_size(patch_size: int, scale: int, what: str) -> None:
    """Raises :class:`FlagError` unless ``--patch-size`` is a multiple of the scale ``what``."""
    if patch_size % scale:
        raise FlagError(f"--patch-size {patch_size} is not a multiple of {what} {scale}")


@dataclasses.dataclass
class _TrainModel:
    """What ``train`` trains, and on what."""

    train_dir: list[str] = setting([], "Folder(s) of HR training images (recursive).")
    variant: str = setting("drn-s", "drn-s or drn-l.", choices=VARIANTS)
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    init: str | None = setting(None, "Start from this .keras model (e.g. a converted checkpoint).")


@dataclasses.dataclass
class _AdaptModel:
    """What ``adapt`` adapts, and on what."""

    model: str = setting("default", "The trained .keras model to adapt, or 'default'.")
    scale: int | None = setting(
        None,
        "Upscaling factor: picks the packaged model of --model default (2, 4 or 8; default 4), "
        "or must be the .keras model's.",
    )
    paired_dir: list[str] = setting(
        [], "Folder(s) of HR images for the paired samples (bicubic LR; required)."
    )
    unpaired_dir: list[str] = setting(
        [],
        "Folder(s) of LR-only images, any size and format, and/or video files (or folders "
        "holding them): the data to adapt to (required).",
    )
    frames_per_video: int = setting(
        16, "Frames sampled from each video of --unpaired-dir, spread evenly over the clip."
    )
    unpaired_ratio: float = setting(
        0.3, "Share of LR-only samples in every batch, exact up to rounding (the paper's best)."
    )
    unpaired_loop: str = setting(
        "cascade",
        "Closed loop of the LR-only samples: 'cascade' |D0(SR_x2) - LR| + |D0(D1(...(SR_top))) "
        "- LR| (measured better, README 'DRN-Adapt'), or 'first' the first term alone.",
        choices=("first", "cascade"),
    )


@dataclasses.dataclass
class _RunSettings:
    """Optimisation, precision and run-folder settings shared by ``train`` and ``adapt``."""

    val_dir: list[str] = setting([], "Folder(s) of validation images (benchmark layout or plain).")
    output: str = setting("runs/drn", "Run directory: model, checkpoints, logs, curves.")
    steps: int = setting(1_000_000, "Training steps (batches) in all.")
    steps_per_epoch: int = setting(1000, "Steps between validations, checkpoints and backups.")
    batch_size: int = setting(32, "Global batch size (split over replicas).")
    patch_size: int = setting(384, "HR patch size; the LR input is patch_size / scale.")
    learning_rate: float = setting(1e-4, "Initial Adam learning rate.")
    min_learning_rate: float = setting(1e-7, "Learning rate at the end of the cosine decay.")
    beta_1: float = setting(0.9, "Adam beta 1.")
    beta_2: float = setting(0.999, "Adam beta 2.")
    epsilon: float = setting(1e-8, "Adam epsilon.")
    dual_weight: float = setting(0.1, "Weight of the dual (closed-loop) loss.")
    augment: bool = setting(True, "Random flips and transposes.")
    precision: str = setting(
        "auto", "float32, mixed_float16, mixed_bfloat16 or auto.", choices=TRAINING_PRECISIONS
    )
    strategy: str = setting(
        "default",
        "Devices: 'default' one device, 'mirrored' every GPU of this machine, 'multi_worker' "
        "the machines of the TF_CONFIG cluster (run the command on each; README 'Training on "
        "a cluster'). --batch-size stays the global batch.",
        choices=("default", "mirrored", "multi_worker"),  # drn_tf.distribute.STRATEGIES
    )
    cluster_timeout: int = setting(
        300, "--strategy multi_worker: seconds to wait for every worker of TF_CONFIG to join."
    )
    cache_dir: str | None = setting(None, "On-disk cache of the computed LR pyramids.")
    seed: int = setting(1, "Random seed (data order, crops, initialisation).")
    tensorboard: bool = setting(True, "Write TensorBoard scalars and SR sample images.")
    progress: int = setting(1, "Keras progress output: 0 silent, 1 progress bar, 2 one line/epoch.")
    overwrite: bool = setting(
        False, "Start afresh in an --output folder that holds another run (deletes that run)."
    )

    def check(self) -> None:
        """Raises :class:`FlagError` naming the first flag whose value is wrong or missing. Reads
        no file (so a command says it before loading TensorFlow); the paths are checked by
        :func:`drn_tf.training.validate_config`."""
        for field in dataclasses.fields(self):
            choices, value = field.metadata.get("choices"), getattr(self, field.name)
            if choices and value not in choices:
                raise FlagError(
                    f"{_flag(field.name)} must be one of {', '.join(choices)}, got {value!r}"
                )
        if self.scale is not None and (self.scale < 2 or self.scale & (self.scale - 1)):
            raise FlagError(f"--scale {self.scale} is not a power of two (2, 4, 8, …)")
        for name in ("steps", "steps_per_epoch", "batch_size", "patch_size", "cluster_timeout"):
            if getattr(self, name) < 1:
                raise FlagError(f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        # `not x > 0` rather than `x <= 0`, so that NaN fails too.
        if not self.learning_rate > 0:
            raise FlagError(f"--learning-rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise FlagError(
                f"--min-learning-rate must be between 0 and --learning-rate "
                f"{self.learning_rate}, got {self.min_learning_rate}"
            )
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise FlagError(f"{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if not self.epsilon > 0:
            raise FlagError(f"--epsilon must be positive, got {self.epsilon}")
        if not self.dual_weight >= 0:
            raise FlagError(f"--dual-weight must be at least 0, got {self.dual_weight}")
        if self.progress not in (0, 1, 2):
            raise FlagError(f"--progress must be 0, 1 or 2, got {self.progress}")


# Base classes listed last come first in the fields, hence in --help.
@dataclasses.dataclass
class TrainConfig(_RunSettings, _TrainModel):
    """A training run. Defaults are the authors' recipe (docs/drn-reference.md §3)."""

    def check(self) -> None:
        if not self.train_dir:
            raise FlagError("no training folder given: --train-dir is required")
        super().check()
        for name in ("n_blocks", "n_feats"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FlagError(f"{_flag(name)} must be at least 1, got {value}")
        check_patch_size(self.patch_size, self.scale, "--scale")


@dataclasses.dataclass
class AdaptConfig(_RunSettings, _AdaptModel):
    """A DRN-Adapt run (docs/drn-reference.md §1.5): a trained model fine-tuned on mixed batches
    of paired HR images and LR-only images, which count only through the closed loop."""

    output: str = setting("runs/adapt", "Run directory: model, checkpoints, logs, curves.")
    steps: int = setting(10_000, "Adaptation steps (batches) in all.")

    def check(self) -> None:
        """(``--patch-size`` against the model's scale is checked once the model is loaded.)"""
        for name, what in (("paired_dir", "paired"), ("unpaired_dir", "LR-only")):
            if not getattr(self, name):
                raise FlagError(f"no {what} folder given: {_flag(name)} is required")
        super().check()
        if self.frames_per_video < 1:
            raise FlagError(f"--frames-per-video must be at least 1, got {self.frames_per_video}")
        unpaired_count(self.batch_size, self.unpaired_ratio)
