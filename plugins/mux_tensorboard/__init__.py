"""mux_tensorboard: the ``tensorboard`` sink -- the stream's numbers as TensorBoard runs.

Each source becomes a run directory under ``logdir`` (each new run segment,
after a ``restart`` alert, a sub-run of it); every numeric payload field a
scalar at the payload's step, every alert a text summary. Point TensorBoard
at ``logdir`` while mux runs, or convert a recording afterwards with
``mux replay FILE --config tb.toml``. See the user guide's TensorBoard recipe.

The event files are written with tensorboardX's protocol buffers and record
framing (no TensorFlow, no torch), from the ``mux[tensorboard]`` extra.
Without it this module raises ImportError with the install hint, so ``mux
plugins`` lists the plugin as unavailable with that hint and a config using
``type = "tensorboard"`` fails ``mux check`` with it -- never a traceback.
"""

from __future__ import annotations

import importlib.util

from mux_core.hookspecs import Register, hookimpl

__all__ = ["INSTALL_HINT", "TensorBoardOptions", "TensorBoardSink", "mux_register_sinks"]

INSTALL_HINT = (
    "tensorboardX is not installed; install the TensorBoard sink with: "
    "pip install 'mux[tensorboard]'"
)

if importlib.util.find_spec("tensorboardX") is None:
    raise ImportError(INSTALL_HINT)

from .sink import TensorBoardOptions, TensorBoardSink  # noqa: E402


@hookimpl
def mux_register_sinks(register: Register) -> None:
    """Provide ``type = "tensorboard"``."""
    register("tensorboard", TensorBoardSink)
