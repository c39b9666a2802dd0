"""``python -m drn_tf …`` is the same as the ``drn-tf`` command."""

from drn_tf.cli import run

run()
