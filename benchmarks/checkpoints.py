"""The authors' checkpoint layout from the benchmarks' side: the sizes a primal state dict was
saved from, and a Keras DRN written back into that layout (``drn_tf.convert``'s mapping run
backwards), so the PyTorch paths can run the very weights the Keras paths run."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from drn_tf.convert import primal_mapping, shuffle_permutation


def checkpoint_sizes(state_dict: dict) -> dict[str, int]:
    """``scale``, ``n_blocks``, ``n_feats`` of the DRN an authors' primal state dict (tensors or
    arrays) was saved from, read off its keys and the head's shape."""
    keys = {key.removeprefix("module.") for key in state_dict}
    phases = sum(1 for key in keys if re.fullmatch(r"tail\.\d+\.weight", key)) - 1
    blocks = {key.split(".")[2] for key in keys if key.startswith("up_blocks.0.")}
    head = state_dict.get("head.weight", state_dict.get("module.head.weight"))
    if phases < 1 or head is None:
        raise ValueError("not a DRN primal state dict (no head.weight / tail.k.weight keys)")
    return {"scale": 2**phases, "n_blocks": len(blocks) - 2, "n_feats": int(head.shape[0])}


def keras_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The authors'-format primal state dict of a Keras ``DRN`` as float32 arrays: the
    converter's mapping run backwards (``drn_tf.convert`` of it gives the same weights back)."""
    cfg = model.drn_config
    state = {}
    for key, variable, _ in primal_mapping(model.primal, cfg):
        value = np.asarray(variable.numpy(), np.float32)
        if re.fullmatch(rf"up_blocks\.\d+\.{cfg.n_blocks}\.0\.(weight|bias)", key):
            # the upsampler conv, whose output channels the converter permuted
            value = value[..., np.argsort(shuffle_permutation(value.shape[-1]))]
        if value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))  # Keras [kh, kw, in, out] → [out, in, kh, kw]
        state[key] = np.ascontiguousarray(value)
    return state
