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
import importlib.abc
import importlib.util
import inspect
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import typing
from collections.abc import Callable, Sequence


def setting(default, help: str, choices: Sequence | None = None, **kwargs):
    """A dataclass field that is also a command-line flag with ``help`` (and, if given, only
    the values ``choices``)."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


class UsageError(Exception):
    """Wrong flags or arguments: one line and exit status 2."""


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


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


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
    # and no temporary file is left; handlers can only be set from the main thread.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        function(config, extra)
    except UsageError as error:
        _print_usage_error(prog, error)
        return 2
    except (ValueError, OSError, ImportError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


# --- settings of library functions that commands expose as flags --------------------------


@dataclasses.dataclass
class _TrainModel:
    """What ``train`` trains, and on what."""

    train_dir: list[str] = setting([], "Folder(s) of HR training images (recursive).")
    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    init: str | None = setting(None, "Start from this .keras model (e.g. a converted checkpoint).")


@dataclasses.dataclass
class _AdaptModel:
    """What ``adapt`` adapts, and on what."""

    model: str = setting("default", "The trained .keras model to adapt, or 'default'.")
    paired_dir: list[str] = setting(
        [], "Folder(s) of HR images for the paired samples (bicubic LR; required)."
    )
    unpaired_dir: list[str] = setting(
        [], "Folder(s) of LR-only images, any size and format: the data to adapt to (required)."
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
    precision: str = setting("auto", "float32, mixed_float16, mixed_bfloat16 or auto.")
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


# Base classes listed last come first in the fields, hence in --help.
@dataclasses.dataclass
class TrainConfig(_RunSettings, _TrainModel):
    """A training run. Defaults are the authors' recipe (docs/drn-reference.md §3)."""


@dataclasses.dataclass
class AdaptConfig(_RunSettings, _AdaptModel):
    """A DRN-Adapt run (docs/drn-reference.md §1.5): a trained model fine-tuned on mixed batches
    of paired HR images and LR-only images, which count only through the closed loop."""

    output: str = setting("runs/adapt", "Run directory: model, checkpoints, logs, curves.")
    steps: int = setting(10_000, "Adaptation steps (batches) in all.")
