"""The runtime's exceptions: every message names the problem and the fix, for a user to read."""


class WanError(Exception):
    """Base of every error the runtime raises on purpose."""


class CheckpointError(WanError):
    """A checkpoint file or folder is missing, unreadable, or does not match what it must hold."""


class InputError(WanError):
    """An argument or tensor given to the runtime is not valid."""


class LaunchInputError(InputError):
    """An ``InputError`` every process of a ``torchrun`` launch finds alike, from what they all
    share (so the first process alone need tell it)."""


class GraphCaptureError(WanError):
    """The DiT's blocks could not be captured as a CUDA graph (``cuda_graphs``)."""


class NumericalError(WanError):
    """A run produced NaN or infinite values."""
