"""The building blocks of DRN, as small registered Keras layers.

Every layer works on NHWC tensors with dynamic height and width, and is built only from ops
that XLA, TFLite's built-in set and ONNX all accept (convolutions, padding by concatenation,
``depth_to_space``), so the models export without custom or Flex ops.

Pixel values follow the authors' code: RGB on the 0..255 range (``rgb_range = 255``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

# DIV2K RGB mean, as in the authors' MeanShift (std = 1).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

_PACKAGE = "drn_tf"


def torch_conv_init(fan_in: int) -> dict:
    """Initializers matching PyTorch's ``nn.Conv2d`` defaults, so training starts where theirs does.

    PyTorch draws weights from kaiming_uniform(a=√5), i.e. U(±√(1/fan_in)), and biases from
    U(±1/√fan_in).
    """
    bound = 1.0 / math.sqrt(fan_in)
    return {
        "kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        "bias_initializer": keras.initializers.RandomUniform(-bound, bound),
    }


def conv(
    filters: int,
    kernel_size: int,
    in_channels: int,
    name: str | None = None,
    use_bias: bool = True,
    dtype=None,
) -> layers.Conv2D:
    """A stride-1 'same' convolution initialised as PyTorch would (``padding = k // 2``)."""
    init = torch_conv_init(in_channels * kernel_size * kernel_size)
    if not use_bias:
        init.pop("bias_initializer")
    return layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=use_bias, name=name, dtype=dtype, **init
    )


def fold_projection(upsample: layers.Conv2D, project: layers.Conv2D, scale: int = 2):
    """One convolution equal to ``upsample`` (k×k, ``C_in → r²·C``), a ×r pixel shuffle, then
    ``project`` (1×1, ``C → P``): the kernel ``(k, k, C_in, r²·P)`` and bias ``(r²·P,)``, float32,
    of a k×k convolution that the same shuffle follows.

    The projection is linear and reads one pixel, so it moves before the shuffle: sub-pixel ``s``
    of output channel ``p`` is ``Σ_c W[c, p] · (K[…, s·C + c] * x + b[s·C + c]) + d[p]`` (DCR
    order, :class:`PixelShuffle`). The shuffle then carries ``r²·P`` channels instead of
    ``r²·C``: in DRN (``P ≤ C/2``) half or less of the ×2 convolution's multiply-accumulates, and
    the 1×1 convolution at the larger size is gone.
    """
    kernel = ops.convert_to_tensor(upsample.kernel, "float32")
    height, width, c_in, channels = kernel.shape
    mixing = ops.convert_to_tensor(project.kernel, "float32")[0, 0]  # (C, P)
    subpixels = scale * scale
    if channels != subpixels * mixing.shape[0]:
        raise ValueError(
            f"{upsample.name} gives {channels} channels, not {subpixels} sub-pixels of the "
            f"{mixing.shape[0]} that {project.name} reads"
        )
    kernel = ops.matmul(ops.reshape(kernel, (-1, mixing.shape[0])), mixing)
    bias = ops.matmul(
        ops.reshape(ops.convert_to_tensor(upsample.bias, "float32"), (subpixels, -1)), mixing
    )
    bias = bias + ops.convert_to_tensor(project.bias, "float32")
    return ops.reshape(kernel, (height, width, c_in, -1)), ops.reshape(bias, (-1,))


def _torch_cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """The cubic convolution kernel of PyTorch's bicubic interpolation (coefficient a = -0.75)."""
    x = np.abs(x)
    return np.where(
        x <= 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
    )


def torch_bicubic_phase_filters(scale: int) -> np.ndarray:
    """1-D filters of PyTorch's ×``scale`` bicubic upsampling, one per output phase.

    Returns float64 ``(scale, 5)``: row ``r`` gives the weights that output pixel ``scale·i + r``
    puts on input pixels ``i-2 … i+2`` (``align_corners=False``: half-pixel centres, source
    coordinate ``(o + 0.5)/scale - 0.5``, which is never clamped at 0 for cubic).
    """
    filters = np.zeros((scale, 5))
    for r in range(scale):
        # Source position of output pixel scale·i + r, relative to input pixel i: in (-0.5, 0.5).
        offset = (r + 0.5) / scale - 0.5
        first = math.floor(offset) - 1  # leftmost of the four taps, relative to i
        t = offset - math.floor(offset)
        for tap, distance in enumerate((t + 1, t, 1 - t, 2 - t)):
            filters[r, first + tap + 2] = _torch_cubic(np.float64(distance))
    return filters


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TorchBicubicUpsample(layers.Layer):
    """×``scale`` bicubic upsampling identical to PyTorch ``interpolate(mode="bicubic")``.

    PyTorch's kernel (coefficient -0.75, half-pixel centres, replicated borders) differs from
    ``tf.image.resize`` (-0.5), which also has no XLA kernel and no TFLite built-in. For an
    integer factor bicubic is a fixed polyphase filter, so it is computed here as one 5×5
    convolution producing ``scale²`` phases per channel, then ``depth_to_space``.

    Input: float ``(N, H, W, C)`` (any range). Output: ``(N, scale·H, scale·W, C)``, same dtype.
    Runs in float32 by default: in bfloat16 the 0..255 input would lose about one gray level.
    """

    def __init__(self, scale: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("TorchBicubicUpsample needs a known number of channels")
        phases = torch_bicubic_phase_filters(self.scale)
        # Output channel (ry·scale + rx)·C + c is the DCR order depth_to_space reads.
        kernel = np.zeros((5, 5, channels, self.scale**2 * channels), np.float32)
        for ry in range(self.scale):
            for rx in range(self.scale):
                for c in range(channels):
                    kernel[:, :, c, (ry * self.scale + rx) * channels + c] = np.outer(
                        phases[ry], phases[rx]
                    )
        self._kernel = kernel

    def call(self, x):
        x = _replicate_pad(x, 2)
        y = ops.conv(x, ops.convert_to_tensor(self._kernel, dtype=x.dtype), padding="valid")
        return ops.depth_to_space(y, self.scale) if self.scale > 1 else y

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, _scaled(h, self.scale), _scaled(w, self.scale), c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _scaled(size: int | None, numerator: int, denominator: int = 1) -> int | None:
    """A static size times numerator/denominator, rounded up; None stays None (dynamic)."""
    return None if size is None else -(-size * numerator // denominator)


def _replicate_pad(x, pad: int):
    """Edge-replicate ``pad`` pixels on every side of NHWC ``x`` (``tf.pad`` has no such mode)."""
    top, bottom = x[:, :1], x[:, -1:]
    x = ops.concatenate([top] * pad + [x] + [bottom] * pad, axis=1)
    left, right = x[:, :, :1], x[:, :, -1:]
    return ops.concatenate([left] * pad + [x] + [right] * pad, axis=2)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MeanShift(layers.Layer):
    """Subtracts (``sign=-1``) or adds (``sign=+1``) the dataset RGB mean, as a 1×1 convolution.

    The authors implement it as a trainable 1×1 conv (identity kernel, bias ``sign·255·mean``);
    their ``requires_grad = False`` freezes nothing, so their checkpoints carry trained values.
    We keep the same 12 parameters per layer so those checkpoints load exactly.

    Input/output: float ``(N, H, W, 3)`` on 0..255 (input of ``+1``: mean-free values).
    """

    def __init__(self, sign: int, rgb_mean=DIV2K_RGB_MEAN, rgb_range: float = 255.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sign = int(sign)
        self.rgb_mean = tuple(float(m) for m in rgb_mean)
        self.rgb_range = float(rgb_range)

    def build(self, input_shape):
        bias = self.sign * self.rgb_range * np.asarray(self.rgb_mean, np.float32)
        self.kernel = self.add_weight(
            shape=(1, 1, 3, 3),
            name="kernel",
            initializer=keras.initializers.Constant(np.eye(3, dtype=np.float32)[None, None]),
        )
        self.bias = self.add_weight(
            shape=(3,), name="bias", initializer=keras.initializers.Constant(bias)
        )

    def call(self, x):
        return ops.conv(x, ops.cast(self.kernel, x.dtype)) + ops.cast(self.bias, x.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "sign": self.sign,
            "rgb_mean": self.rgb_mean,
            "rgb_range": self.rgb_range,
        }


def spatial_mean(x):
    """The mean over height and width of NHWC ``x``: ``(N, H, W, C)`` → ``(N, 1, 1, C)``, in
    ``x``'s dtype.

    float32: ``ops.mean``, the graph every exporter sees (ONNX/OpenVINO ``ReduceMean``, which
    NNCF recognises as a squeeze-and-excitation block and keeps in float).

    Lower precisions (the mixed_bfloat16 policy): one matrix product, a row of ones times the
    ``(H·W, C)`` pixels, divided by ``H·W`` in float32. Why: ``ops.mean`` of a bfloat16
    tensor first casts all of it to float32, then reduces over two axes with Eigen; the product
    runs on oneDNN's GEMM (AMX), accumulating in float32 too. At 256×256×64 that is 12.9 ms →
    1.8 ms, and the mean and its casts were about a fifth of DRN-S ×4's mixed_bfloat16 op time
    (``python -m benchmarks.profile_ops``; before/after: ``python -m benchmarks.formulations``).
    """
    if keras.backend.standardize_dtype(x.dtype) == "float32":
        return ops.mean(x, axis=(1, 2), keepdims=True)
    shape = ops.shape(x)
    n, pixels, channels = shape[0], shape[1] * shape[2], x.shape[-1]
    total = ops.matmul(ops.ones((n, 1, pixels), x.dtype), ops.reshape(x, (n, pixels, channels)))
    count = ops.sum(ops.ones((n, 1, pixels), "float32"), axis=-1, keepdims=True)  # exact H·W
    return ops.cast(ops.expand_dims(ops.cast(total, "float32") / count, 1), x.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelAttention(layers.Layer):
    """RCAN channel attention: global average pool, 1×1 conv C→C//r, ReLU, 1×1 conv, sigmoid gate.

    Input/output: ``(N, H, W, C)``; the output is the input scaled per channel.
    """

    def __init__(self, channels: int, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.reduction = int(reduction)
        squeezed = max(self.channels // self.reduction, 1)
        self.squeeze = layers.Conv2D(
            squeezed, 1, name="squeeze", dtype=self.dtype_policy, **torch_conv_init(self.channels)
        )
        self.excite = layers.Conv2D(
            self.channels, 1, name="excite", dtype=self.dtype_policy, **torch_conv_init(squeezed)
        )

    def build(self, input_shape):
        pooled = (input_shape[0], 1, 1, self.channels)
        self.squeeze.build(pooled)
        self.excite.build((input_shape[0], 1, 1, self.squeeze.filters))

    def call(self, x):
        gate = ops.sigmoid(self.excite(ops.relu(self.squeeze(spatial_mean(x)))))
        return x * gate

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RCAB(layers.Layer):
    """Residual channel attention block: conv3×3, ReLU, conv3×3, channel attention, + input.

    No residual scaling and no normalisation, as in the authors' code.
    Input/output: ``(N, H, W, channels)``.
    """

    def __init__(self, channels: int, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.reduction = int(reduction)
        self.conv1 = conv(self.channels, 3, self.channels, name="conv1", dtype=self.dtype_policy)
        self.conv2 = conv(self.channels, 3, self.channels, name="conv2", dtype=self.dtype_policy)
        self.attention = ChannelAttention(
            self.channels, self.reduction, name="attention", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)
        self.attention.build(input_shape)

    def call(self, x):
        return x + self.attention(self.conv2(ops.relu(self.conv1(x))))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DownBlock(layers.Layer):
    """Halves the resolution: conv3×3 stride 2 (→ ``mid_channels``), LeakyReLU 0.2, conv3×3.

    Used both for the primal down-phases (C → C → 2C) and for the dual networks (3 → F → 3).
    No biases, as in the authors' code. The stride-2 conv pads one pixel on every side like
    PyTorch's ``padding=1``; Keras ``"same"`` would pad only bottom/right on even sizes and
    shift the sampling grid by one pixel.

    Input ``(N, H, W, C_in)`` → output ``(N, ceil(H/2), ceil(W/2), out_channels)``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.mid_channels = int(mid_channels)
        self.out_channels = int(out_channels)
        kernel_init = torch_conv_init(9 * self.in_channels)["kernel_initializer"]
        self.down = layers.Conv2D(
            self.mid_channels,
            3,
            strides=2,
            padding="valid",
            use_bias=False,
            name="down",
            dtype=self.dtype_policy,
            kernel_initializer=kernel_init,
        )
        self.conv = conv(
            self.out_channels,
            3,
            self.mid_channels,
            name="conv",
            use_bias=False,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        n, h, w, c = input_shape
        self.down.build((n, None, None, c))
        self.conv.build((n, None, None, self.mid_channels))

    def call(self, x):
        x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return self.conv(ops.leaky_relu(self.down(x), negative_slope=0.2))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _scaled(h, 1, 2), _scaled(w, 1, 2), self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "mid_channels": self.mid_channels,
            "out_channels": self.out_channels,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PixelShuffle(layers.Layer):
    """×``scale`` sub-pixel rearrangement, ``(N, H, W, C·r²)`` → ``(N, r·H, r·W, C)``.

    This is TensorFlow's ``depth_to_space`` (DCR order: sub-pixel (i, j) of channel c comes from
    input channel ``(i·r + j)·C + c``). PyTorch's PixelShuffle reads ``c·r² + i·r + j`` instead;
    the checkpoint converter permutes the preceding convolution's output channels to match.
    """

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        return ops.depth_to_space(x, self.scale)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, _scaled(h, self.scale), _scaled(w, self.scale), c // self.scale**2)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
