"""DRN primal and dual networks (Guo et al., CVPR 2020), layer for layer as the authors' release.

- The primal network maps an LR image to the whole SR pyramid ``[×1, ×2, …, ×scale]``.
- Dual network ``k`` maps the level-``k+1`` output back down to level ``k``.
- :class:`DRN` bundles both, so one ``.keras`` file carries everything inference and
  fine-tuning need.

All images are float32 RGB, NHWC, on the 0..255 range, with any batch size, height and width.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import keras
from keras import layers, ops

from drn_tf.files import atomic_path
from drn_tf.layers import (
    RCAB,
    DownBlock,
    MeanShift,
    PixelShuffle,
    TorchBicubicUpsample,
    conv,
    fold_projection,
)
from drn_tf.scales import check_scale
from drn_tf.settings import VARIANTS

# (variant, scale) -> (n_blocks, n_feats), from the authors' `utility.init_model`.
PRESETS = {
    ("drn-s", 4): (30, 16),
    ("drn-s", 8): (30, 8),
    ("drn-l", 4): (40, 20),
    ("drn-l", 8): (36, 10),
}


@dataclasses.dataclass(frozen=True)
class DRNConfig:
    """The size of a DRN model.

    ``scale`` is any power of two ≥ 2; ``n_blocks`` is the number of RCABs per up-phase and
    ``n_feats`` the width of the full-resolution features (the bottleneck is
    ``n_feats · scale`` wide). Unset sizes come from the paper's preset of ``variant`` for
    ×4 (scales up to 4) or ×8 (scales from 8).
    """

    variant: str = "drn-s"
    scale: int = 4
    n_blocks: int | None = None
    n_feats: int | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_scale(self.scale)
        n_blocks, n_feats = PRESETS[(self.variant, 4 if self.scale <= 4 else 8)]
        if self.n_blocks is None:
            object.__setattr__(self, "n_blocks", n_blocks)
        if self.n_feats is None:
            object.__setattr__(self, "n_feats", n_feats)
        if self.n_blocks < 1 or self.n_feats < 1:
            raise ValueError(f"n_blocks and n_feats must be positive, got {self}")

    @property
    def phases(self) -> int:
        """Number of ×2 steps, ``log2(scale)``."""
        return int(math.log2(self.scale))


def build_drn(variant: str = "drn-s", scale: int = 4, **overrides) -> keras.Model:
    """Builds the primal network of a DRN model.

    Args:
        variant: ``"drn-s"`` or ``"drn-l"``.
        scale: the upscaling factor, a power of two.
        **overrides: other :class:`DRNConfig` fields (``n_blocks``, ``n_feats``).

    Returns:
        A functional model with input ``lr`` float32 ``(N, H, W, 3)`` on 0..255 and a list of
        ``log2(scale) + 1`` outputs, lowest level first: output ``k`` is
        ``(N, 2^k·H, 2^k·W, 3)`` float32 on (about) 0..255.
    """
    cfg = DRNConfig(variant, scale, **overrides)
    feats, phases = cfg.n_feats, cfg.phases

    lr = keras.Input((None, None, 3), name="lr")
    x = TorchBicubicUpsample(cfg.scale, name="upsample")(lr)
    x = MeanShift(-1, name="sub_mean")(x)
    x = conv(feats, 3, 3, name="head")(x)

    skips = []
    for k in range(phases):
        skips.append(x)
        width = feats * 2**k
        x = DownBlock(width, width, 2 * width, name=f"down_{k}")(x)

    # One mean-adding layer shared by every level, as in the authors' model (12 parameters).
    add_mean = MeanShift(+1, name="add_mean")
    # Tails run in float32: a bfloat16 RGB output on 0..255 would be off by up to half a level.
    width = feats * 2**phases
    outputs = [add_mean(conv(3, 3, width, name="tail_0", dtype="float32")(x))]
    for k in range(phases):
        for j in range(cfg.n_blocks):
            x = RCAB(width, name=f"up_{k}_rcab_{j}")(x)
        x = conv(4 * width, 3, width, name=f"up_{k}_upsample")(x)
        x = PixelShuffle(2, name=f"up_{k}_shuffle")(x)
        skip = skips[phases - k - 1]
        x = conv(skip.shape[-1], 1, width, name=f"up_{k}_project")(x)
        x = layers.Concatenate(name=f"up_{k}_concat")([x, skip])
        width = x.shape[-1]
        outputs.append(add_mean(conv(3, 3, width, name=f"tail_{k + 1}", dtype="float32")(x)))
    return keras.Model(lr, outputs, name=f"{cfg.variant}_x{cfg.scale}_primal")


def top_level(primal: keras.Model, lr):
    """The top output of ``primal`` (a network of :func:`build_drn`) for ``lr`` float32
    ``(N, H, W, 3)`` on 0..255: float ``(N, s·H, s·W, 3)``, ``primal(lr)[-1]`` up to float
    rounding, computed as inference wants it.

    Only that level's tail runs, and each up-phase's ×2 convolution, pixel shuffle and 1×1
    projection run as one convolution and the shuffle (:func:`drn_tf.layers.fold_projection`),
    from the layers' current weights, in their compute dtype: 4.6 % fewer multiply-accumulates
    than the authors' forward pass for the paper's DRN-S ×4, 14.5 % for the packaged ×4 model
    (``docs/speed.md``).
    """
    layer = primal.get_layer
    phases = len(primal.outputs) - 1
    n_blocks = _n_blocks(primal)
    x = layer("head")(layer("sub_mean")(layer("upsample")(lr)))
    skips = []
    for k in range(phases):
        skips.append(x)
        x = layer(f"down_{k}")(x)
    for k in range(phases):
        for j in range(n_blocks):
            x = layer(f"up_{k}_rcab_{j}")(x)
        kernel, bias = fold_projection(layer(f"up_{k}_upsample"), layer(f"up_{k}_project"))
        x = ops.conv(x, ops.cast(kernel, x.dtype), padding="same") + ops.cast(bias, x.dtype)
        x = layer(f"up_{k}_shuffle")(x)
        x = layer(f"up_{k}_concat")([x, skips[phases - k - 1]])
    return layer("add_mean")(layer(f"tail_{phases}")(x))


def build_duals(variant: str = "drn-s", scale: int = 4, **overrides) -> list[keras.Model]:
    """Builds the dual networks of a DRN model, one per ×2 step.

    Dual ``k`` maps float32 ``(N, 2H, 2W, 3)`` (the level-``k+1`` output, 0..255) to
    ``(N, H, W, 3)`` (an estimate of level ``k``): conv3×3 stride 2 to ``n_feats``,
    LeakyReLU 0.2, conv3×3 to RGB, no biases.
    """
    cfg = DRNConfig(variant, scale, **overrides)
    duals = []
    for k in range(cfg.phases):
        x = keras.Input((None, None, 3), name=f"sr_{k + 1}")
        y = DownBlock(3, cfg.n_feats, 3, name="down", dtype="float32")(x)
        duals.append(keras.Model(x, y, name=f"dual_{k}"))
    return duals


@keras.saving.register_keras_serializable(package="drn_tf")
class DRN(keras.Model):
    """A DRN model: the primal network and its dual networks, saved and loaded as one file.

    Calling it runs the primal network: float32 ``(N, H, W, 3)`` on 0..255 → the list of SR
    levels ``[×1, ×2, …, ×scale]``. ``model.duals[k]`` maps level ``k+1`` to level ``k``.
    ``model.drn_config`` is the :class:`DRNConfig` it was built from, saved with it.
    ``model.info`` holds free-form facts saved with the model (e.g. ``{"duals": "random"}``
    for a conversion without the authors' dual checkpoint).
    """

    def __init__(
        self,
        primal: keras.Model,
        duals: list[keras.Model],
        drn_config: DRNConfig | dict | None = None,
        info: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(duals) != len(primal.outputs) - 1:
            raise ValueError(
                f"{len(duals)} dual networks do not fit a primal network with "
                f"{len(primal.outputs)} outputs (expected {len(primal.outputs) - 1})"
            )
        self.primal = primal
        self.duals = list(duals)
        if isinstance(drn_config, dict):
            drn_config = DRNConfig(**drn_config)
        elif drn_config is None:
            drn_config = _legacy_config(primal, len(duals), kwargs.get("name") or "")
        if drn_config.phases != len(self.duals):
            raise ValueError(f"{drn_config} does not fit {len(self.duals)} dual networks")
        self.drn_config = drn_config
        self.info = dict(info or {})
        self.built = True  # both parts are built functional models

    @property
    def scale(self) -> int:
        """The upscaling factor of the primal network."""
        return self.drn_config.scale

    def call(self, lr, training=False):
        return self.primal(lr, training=training)

    def export(
        self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs
    ):
        """Keras' ``Model.export``; without ``input_signature``, the primal network's input
        (float32 ``(N, H, W, 3)``, any batch, height and width). Keras infers a signature only
        from an earlier call, and a DRN is built from its networks, never called."""
        if input_signature is None:
            spec = self.primal.inputs[0]
            input_signature = [keras.InputSpec(shape=spec.shape, dtype=spec.dtype)]
        return super().export(
            filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs
        )

    def get_config(self):
        return {
            **super().get_config(),
            "primal": keras.saving.serialize_keras_object(self.primal),
            "duals": [keras.saving.serialize_keras_object(d) for d in self.duals],
            "drn_config": dataclasses.asdict(self.drn_config),
            "info": self.info,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        primal = keras.saving.deserialize_keras_object(config.pop("primal"))
        duals = [keras.saving.deserialize_keras_object(d) for d in config.pop("duals")]
        return cls(primal, duals, **config)


def _legacy_config(primal: keras.Model, phases: int, name: str) -> DRNConfig:
    """The config of a model saved before DRN stored one (drn-tf 0.1 files).

    Sizes are read off the layers; the variant from the model name, which those versions
    wrote from the config (``drn-l_x4``).
    """
    n_feats = primal.get_layer("head").filters
    variant = "drn-l" if name.startswith("drn-l") else "drn-s"
    return DRNConfig(variant, 2**phases, n_blocks=_n_blocks(primal), n_feats=n_feats)


def _n_blocks(primal: keras.Model) -> int:
    """RCABs per up-phase of a network of :func:`build_drn`, read off its layer names."""
    return sum(1 for layer in primal.layers if layer.name.startswith("up_0_rcab_"))


def build_drn_bundle(variant: str = "drn-s", scale: int = 4, **overrides) -> DRN:
    """Builds a :class:`DRN` holding a fresh primal network and its dual networks."""
    cfg = DRNConfig(variant, scale, **overrides)
    kwargs = {"n_blocks": cfg.n_blocks, "n_feats": cfg.n_feats}
    return DRN(
        build_drn(variant, scale, **kwargs),
        build_duals(variant, scale, **kwargs),
        drn_config=cfg,
        name=f"{variant}_x{scale}",
    )


def deepen(model: DRN, n_blocks: int) -> DRN:
    """``model`` with ``n_blocks`` RCABs per up-phase instead of its fewer: the same outputs, more
    depth to train. Built under the current dtype policy; every layer ``model`` has keeps its
    weights (by name), and each new RCAB (after the old ones of its phase) starts as an identity:
    its second convolution is zero, so its residual adds nothing."""
    cfg = model.drn_config
    if n_blocks < cfg.n_blocks:
        raise ValueError(f"cannot deepen a model of {cfg.n_blocks} RCABs per phase to {n_blocks}")
    deeper = build_drn_bundle(cfg.variant, cfg.scale, n_blocks=n_blocks, n_feats=cfg.n_feats)
    pairs = [(deeper.primal, model.primal), *zip(deeper.duals, model.duals, strict=True)]
    for network, source in pairs:
        names = {layer.name for layer in source.layers}
        for layer in network.layers:
            if layer.name in names:
                layer.set_weights(source.get_layer(layer.name).get_weights())
            elif isinstance(layer, RCAB):
                layer.conv2.set_weights([w * 0 for w in layer.conv2.get_weights()])
    deeper.info = dict(model.info)
    return deeper


def save_model_atomic(model: keras.Model, output: str | os.PathLike) -> Path:
    """Saves ``model`` to ``output`` (``.keras``) through a temporary file, so a failure or an
    interruption never leaves a partial file, and an existing file is replaced only when the
    new one is complete."""
    output = Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"{output}: the output must be a .keras file")
    with atomic_path(output) as temp:
        model.save(temp)
    return output


def package_model(model: DRN, output: str | os.PathLike, note: str | None = None) -> Path:
    """Saves the networks of ``model`` (a :class:`DRN`, or the ``DualRegressionModel`` of a
    training run's ``best.keras``) as a plain :class:`DRN` at ``output``: no optimizer state or
    training settings, in the layers' current dtype policy (float32 when loaded by
    ``drn_tf.load_model`` under the default policy), atomically. ``note`` (how it was trained)
    is kept in ``model.info["training"]``. Returns ``output``."""
    info = {**model.info, **({"training": note} if note else {})}
    plain = DRN(model.primal, model.duals, drn_config=model.drn_config, info=info, name=model.name)
    return save_model_atomic(plain, output)
