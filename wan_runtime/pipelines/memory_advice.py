"""What lowers memory, worked out once for every message that suggests it.

Errors raised through the API (``load_pipeline``'s and ``generate``'s checks, ``fit_memory``)
name the options by their argument names, which are also the command line's flag names; the
command line's own out-of-memory message and warning name its flags (``--t5_cpu``,
``--offload_model True``). Both say the same steps, from the same ``Step`` lists.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from wan_runtime.checks import VAE_TILE_MULTIPLE

if TYPE_CHECKING:
    from wan_runtime.pipelines.memory_plan import PlanOptions

# The models' names in a memory plan and its advice (a task's DiTs: ``dit_label``'s).
TEXT_ENCODER, VAE, AUDIO_ENCODER = "text encoder", "VAE", "speech encoder"


def dit_label(name: str, names: list[str]) -> str:
    """The plan's name of the DiT ``name`` of a task's ``names``."""
    return f"DiT {name}" if len(names) > 1 else "DiT"


def is_dit(label: str) -> bool:
    """Whether the plan's name ``label`` is a DiT's (``dit_label``'s)."""
    return label == "DiT" or label.startswith("DiT ")


# Options whose flags take True or False as a value, as the official script's, said with the value
# either way; the others are switches (``--t5_cpu``, ``--no-t5_cpu``).
_VALUED = frozenset({"offload_model"})
# Steps that say a direction rather than a value.
_DIRECTIONS = frozenset({"more", "fewer", "smaller"})


class Step(NamedTuple):
    """Set ``option`` to ``value`` (a switch's True or False, a number or ``"N"`` for one to
    choose, a dtype's name), or move it the way ``value`` says (``"more"``, ``"fewer"``,
    ``"smaller"``); ``why``: what it does; ``then``: the steps it opens the way to, any of them."""

    option: str
    value: bool | int | str = True
    why: str = ""
    then: tuple[Step, ...] = ()

    def say(self, flags: bool) -> str:
        """The step in words, naming the command line's flag (``flags``) or the argument."""
        name = f"--{self.option}" if flags else self.option
        if self.value in _DIRECTIONS:
            text = f"{self.value} {name}"
        elif isinstance(self.value, bool) and self.option not in _VALUED:
            text = name if self.value else (f"--no-{self.option}" if flags else f"no {name}")
        else:
            text = f"{name} {self.value}"
        text = f"{text} ({self.why})" if self.why else text
        if not self.then:
            return text
        opened = ", ".join(step.say(flags) for step in self.then)
        return f"{text}, then {opened}" if len(self.then) == 1 else f"{text}, then any of {opened}"


DIT_FP8 = Step("dit_fp8", True, "DiT weights in 8-bit floats: half the memory, not the official video")
TO_BFLOAT16 = Step("dtype", "bfloat16", "half the bytes of float32")
NO_CUDA_GRAPHS = Step("cuda_graphs", False, "the DiT blocks' graphs keep copies of their input and output")
# What moves weights or exchanges tokens while the DiT blocks run, which no CUDA graph can hold.
_UNGRAPHABLE = frozenset({"stream_blocks", "dit_fsdp", "ulysses_size"})


def graphable(steps: Sequence[Step]) -> list[Step]:
    """The ``steps`` a run whose DiT blocks replay from CUDA graphs can take; those no graph can
    hold, after going without the graphs, where the first of them was."""
    kept = [step for step in steps if step.option not in _UNGRAPHABLE]
    ruled_out = tuple(step for step in steps if step.option in _UNGRAPHABLE)
    if ruled_out:
        kept.insert(list(steps).index(ruled_out[0]), Step("cuda_graphs", False, then=ruled_out))
    return kept


def say(steps: Sequence[Step], flags: bool, nothing: str = "no option lowers them further") -> str:
    """``steps`` as one piece of advice, or ``nothing`` when there are none; a step that twice
    sets one option to one value said once, where it comes first, with the first reason given and
    what each opened the way to. Said with the arguments' names, it tells the command line's user
    that the flags have the same names."""
    if not steps:
        return nothing
    merged: dict[tuple[str, object], Step] = {}
    for step in steps:
        key = (step.option, step.value)
        first = merged.setdefault(key, step)
        if first is not step:
            merged[key] = first._replace(why=first.why or step.why, then=first.then + step.then)
    names = "" if flags else " (the command line's flags of those names)"
    return "to fit, try " + ", ".join(step.say(flags) for step in merged.values()) + names


def weight_steps(
    options: PlanOptions, most_streamed: int | None, working: str | None = None,
    on_device: Collection[str] = (),
) -> list[Step]:
    """What lowers the weights' device memory, of what ``options`` allow and have not done
    (``most_streamed``: how many blocks can stream at most; None: unknown), as a run whose DiT
    blocks replay from CUDA graphs (``options.cuda_graphs``) can take it (``graphable``).
    ``working``: the model (by the plan's name) whose stage to lower, ``on_device`` the models on
    the device meanwhile, itself among them (``WeightPlan.on_device``): the steps that leave their
    weights as they are are left out (None: the stage not known, every step)."""
    o, several = options, options.world > 1
    every = working is None
    text = every or TEXT_ENCODER in on_device
    dits = every or any(is_dit(name) for name in on_device)
    # Taking turns sends the others away, but for the VAE and a text encoder FSDP shards, which stay.
    turns = every or any(name not in (working, VAE) and not (name == TEXT_ENCODER and o.t5_fsdp)
                         for name in on_device)
    steps = []
    if turns and not o.offload_model and not o.dit_fsdp:
        steps.append(Step("offload_model", True, "models wait on the CPU while another works"))
    if dits and several and not o.dit_fsdp:
        steps.append(Step("dit_fsdp", True, "each GPU holds a share of the DiT weights"))
    if text and several and not (o.t5_fsdp or o.t5_cpu):
        steps.append(Step("t5_fsdp", True, "each GPU holds a share of the text encoder"))
    if text and not (o.t5_cpu or o.t5_fsdp):
        steps.append(Step("t5_cpu", True, "the text encoder stays on the CPU"))
    if dits and not o.dit_fsdp and (most_streamed is None or o.stream_blocks < most_streamed):
        steps.append(Step("stream_blocks", "more" if o.stream_blocks else "N",
                          "DiT blocks wait in CPU memory until they run"))
    if dits and not (o.dit_fsdp or o.dit_fp8):
        steps.append(DIT_FP8)
    # The VAE and the speech encoder compute in float32 whatever the dtype.
    if (text or dits) and o.dtype == torch.float32:
        steps.append(TO_BFLOAT16)
    return graphable(steps) if o.cuda_graphs else steps


def tiling_step(vae_tiling: int) -> Step | None:
    """What lowers the VAE decode's memory: decoding in tiles, or in tiles half as wide (a
    multiple of ``VAE_TILE_MULTIPLE`` pixels); None when the tiles are as small as they go."""
    if not vae_tiling:
        return Step("vae_tiling", True, "the VAE decodes in tiles, about a third of its memory at 720p, "
                                        "not the official video")
    smaller = max(VAE_TILE_MULTIPLE, vae_tiling // 2 // VAE_TILE_MULTIPLE * VAE_TILE_MULTIPLE)
    return None if smaller == vae_tiling else Step("vae_tiling", smaller, "smaller tiles")


def token_steps(
    world: int, ulysses: int, num_heads: int | None = None, cuda_graphs: bool = False
) -> list[Step]:
    """What lowers a DiT step's activations beyond a smaller video: with the blocks replayed from
    CUDA graphs (``cuda_graphs``), dropping the graphs' copies, which the steps hold; under
    torchrun splitting its tokens over the launch's ``world`` processes (after dropping the
    graphs, which exchange no token), where they are not split yet (``ulysses`` 1) and ``world``
    divides the DiT's ``num_heads`` (None: not known, left to the checks of the run it
    suggests)."""
    split = ulysses == 1 and world > 1 and (num_heads is None or num_heads % world == 0)
    steps = [Step("ulysses_size", world, "each GPU computes a slice of the tokens")] if split else []
    return [NO_CUDA_GRAPHS._replace(then=tuple(steps))] if cuda_graphs else steps


def video_steps(frames_option: str) -> list[Step]:
    """A smaller video: fewer pixels or frames (``frames_option``: the task's frame-count option)."""
    return [Step("size", "smaller"), Step(frames_option, "fewer")]
