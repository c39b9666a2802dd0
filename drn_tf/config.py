"""Settings as dataclass fields that double as command-line flags (see ``drn_tf.cli``)."""

from __future__ import annotations

import dataclasses


def setting(default, help: str, **kwargs):
    """A dataclass field that is also a command-line flag with ``help``."""
    if isinstance(default, list):
        return dataclasses.field(
            default_factory=lambda: list(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
