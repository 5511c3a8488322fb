"""Counting the bytes of the tensors alive while some code runs, on the meta device.

Code run on meta-device tensors (shapes and dtypes, no data) costs no memory and little time;
``LiveBytes`` watches it and keeps the largest sum of the tensors alive at once: what the same
code would hold on a device. Two ops are answered as CUDA runs them, where the meta device would
differ: attention (``FusedAttention``: a fused kernel keeps its output and the log-sum-exp rows,
while a meta ``scaled_dot_product_attention`` takes the math path and its [L, L] scores) and
``torch.unique`` of a per-token timestep, whose size depends on the data (two values: the fixed
first frame's 0 and the step's timestep). One function whose meta kernels are slow is answered
with the tensors it allocates, not run (``QuickNormalize``). What a CUDA graph's kernels allocate
(made inside ``pooled``) comes from the graphs' memory pool, which keeps all it ever held apart
from the rest.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

# The CUDA caching allocator hands out blocks in multiples of 512 bytes.
_BLOCK = 512
# A per-token timestep holds two values (see the module's docstring).
_TIMESTEP_VALUES = 2


def _rounded(nbytes: int) -> int:
    return -(-nbytes // _BLOCK) * _BLOCK


_POOLED: ContextVar[bool] = ContextVar("pooled", default=False)


@contextmanager
def pooled() -> Iterator[None]:
    """The tensors made inside come from the CUDA graphs' memory pool (as ``LiveBytes`` counts)."""
    token = _POOLED.set(True)
    try:
        yield
    finally:
        _POOLED.reset(token)


class LiveBytes(TorchDispatchMode):
    """A dispatch mode that counts each new tensor storage an op returns from the op until Python
    frees it (views and in-place results share an input's storage, and count with it); ``peak``
    is the most bytes alive at once since the mode was entered, tensors made before not counted.
    A storage made inside ``pooled`` is the graphs' pool's, which holds on to the most it ever
    held: from then on that most counts beside the other tensors alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.pool_live = 0
        self.pool_most = 0
        self.peak = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.ops.aten._unique2.default and args[0].is_meta:
            out = _meta_unique(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        # A view or an in-place result shares an input's storage: nothing new, even for an input
        # made before the mode (a weight's transpose is not an activation).
        # The storages are held while their ids are compared, so that no id is reused meanwhile.
        held = list(_storages(tree_leaves((args, kwargs))))
        inputs = {id(storage) for storage in held}
        for storage in _storages(tree_leaves(out)):
            if id(storage) not in inputs:
                self._count(storage)
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._counted:
            return
        nbytes = _rounded(storage.nbytes())
        self._counted.add(key)
        in_pool = _POOLED.get()
        if in_pool:
            self.pool_live += nbytes
            self.pool_most = max(self.pool_most, self.pool_live)
        else:
            self.live += nbytes
        self.peak = max(self.peak, self.live + self.pool_most)
        weakref.finalize(storage, self._free, key, nbytes, in_pool)

    def _free(self, key: int, nbytes: int, in_pool: bool) -> None:
        self._counted.discard(key)
        if in_pool:
            self.pool_live -= nbytes
        else:
            self.live -= nbytes


def _storages(leaves: Iterable[object]) -> Iterator[torch.UntypedStorage]:
    """The storages of the tensors among ``leaves``: a wrapper subclass's are those of the tensors
    it wraps (a collective's result waiting for its ``wait``, on real tensors), its own holding none."""
    for leaf in leaves:
        if is_traceable_wrapper_subclass(leaf):
            names, _ = leaf.__tensor_flatten__()
            yield from _storages(getattr(leaf, name) for name in names)
        elif isinstance(leaf, torch.Tensor):
            yield leaf.untyped_storage()


def _meta_unique(
    values: torch.Tensor, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``aten._unique2`` on a meta tensor: ``_TIMESTEP_VALUES`` values, an index per element."""
    unique = torch.empty(_TIMESTEP_VALUES, dtype=values.dtype, device=values.device)
    inverse = torch.empty(values.shape if return_inverse else (0,), dtype=torch.int64, device=values.device)
    counts = torch.empty(_TIMESTEP_VALUES if return_counts else 0, dtype=torch.int64, device=values.device)
    return unique, inverse, counts


class FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` on meta tensors as a fused CUDA kernel allocates: the
    output, laid out as the query is (so that a transpose back to tokens is a view, as on CUDA),
    and float32 log-sum-exp rows [B, H, Lq] while it runs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = {**dict(zip(("query", "key", "value"), args[:3], strict=False)), **kwargs}
        q, v = named["query"], named["value"]
        if not q.is_meta:
            return func(*args, **kwargs)
        rows = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        out = torch.empty_like(q) if v.shape[-1] == q.shape[-1] else q.new_empty(*q.shape[:-1], v.shape[-1])
        del rows
        return out


class QuickNormalize(TorchFunctionMode):
    """``F.normalize`` of a dense floating-point meta tensor over given dims, answered by
    allocating what it allocates, in the same order (the norm, its clamp, the quotient, laid out
    as the input but for the strides of size-1 dims, which hold no bytes), without running its
    three ops: their meta kernels are Python decompositions, which took half the time of a VAE's
    estimate (its RMS norms). Any other call runs as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is not F.normalize:
            return func(*args, **kwargs)
        named = {**dict(zip(("input", "p", "dim", "eps", "out"), args, strict=False)), **kwargs}
        x = named["input"]
        dims = _reduced_dims(x, named.get("dim", 1))
        quick = dims is not None and named.get("out") is None
        if not (quick and x.is_meta and x.is_floating_point() and _dense(x)):
            return func(*args, **kwargs)
        norm = x.new_empty([1 if i in dims else n for i, n in enumerate(x.shape)])
        clamped = torch.empty_like(norm)
        del norm
        quotient = torch.empty_like(x)
        del clamped
        return quotient


def _reduced_dims(x: torch.Tensor, dim: object) -> set[int] | None:
    """The dims of ``x`` that ``dim`` (an int, or a tuple or list of them) names, each once;
    None for anything else (no dims, out of range, twice the same), which the real call judges."""
    dims = list(dim) if isinstance(dim, (tuple, list)) else [dim]
    if not dims or x.dim() == 0 or not all(isinstance(d, int) and -x.dim() <= d < x.dim() for d in dims):
        return None
    wrapped = {d % x.dim() for d in dims}
    return wrapped if len(wrapped) == len(dims) else None


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x``'s elements lie in one gap-free, overlap-free run of memory, in any order of
    dims."""
    expected = 1
    for stride, size in sorted((stride, size) for size, stride in zip(x.shape, x.stride(), strict=True)
                               if size != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def peak_bytes(run: Callable[..., object], *args: object, **kwargs: object) -> int:
    """The most bytes ``run(*args, **kwargs)`` holds at once on meta tensors, its inputs made
    inside it counted, its result counted until it returns, as ``LiveBytes`` counts them."""
    counter = LiveBytes()
    with torch.inference_mode(), FusedAttention(), QuickNormalize(), counter:
        run(*args, **kwargs)
    return counter.peak
