"""Pipeline schedules: the order in which one pipeline stage runs forward and backward passes.

Pure functions over integers (no simpy), so they are easy to test: ``one_f_one_b`` is PipeDream-Flush /
Megatron 1F1B; ``interleaved`` is Megatron's interleaved 1F1B with ``vp`` model chunks per stage
(Narayanan et al. SC21 section 2.2). An action is ``(phase, micro_batch, chunk)`` with phase "F" or "B".
``combined`` pairs each steady-state forward with the backward that follows it, for schedules that run
the two together (Megatron-Core's EP communication overlap).
"""

from __future__ import annotations

Action = tuple[str, int, int]
Step = Action | tuple[str, Action, Action]  # ("FB", forward, backward): run together


def one_f_one_b(stage: int, stages: int, microbatches: int, min_warmup: int = 0) -> list[Action]:
    """Warm-up forwards, steady one-forward-one-backward, cool-down backwards (at least ``min_warmup``
    warm-up forwards: a combined schedule needs one on the last stage, whose pairs are otherwise the same
    micro-batch)."""
    warmup = min(max(stages - stage - 1, min_warmup), microbatches)
    actions: list[Action] = [("F", m, 0) for m in range(warmup)]
    for i in range(microbatches - warmup):
        actions.append(("F", warmup + i, 0))
        actions.append(("B", i, 0))
    actions.extend(("B", m, 0) for m in range(microbatches - warmup, microbatches))
    return actions


def interleaved(stage: int, stages: int, microbatches: int, chunks: int, min_warmup: int = 0) -> list[Action]:
    """Megatron's interleaved schedule: micro-batches move through chunks in groups of ``stages``."""
    if chunks == 1:
        return one_f_one_b(stage, stages, microbatches, min_warmup)
    total = microbatches * chunks

    def forward_of(k: int) -> tuple[int, int]:
        group, within = divmod(k, stages * chunks)
        chunk = within // stages
        return group * stages + within % stages, chunk

    def backward_of(k: int) -> tuple[int, int]:
        mb, chunk = forward_of(k)
        return mb, chunks - 1 - chunk

    warmup = min(max((stages - stage - 1) * 2 + (chunks - 1) * stages, min_warmup), total)
    actions: list[Action] = []
    for k in range(warmup):
        actions.append(("F", *forward_of(k)))
    for i in range(total - warmup):
        actions.append(("F", *forward_of(warmup + i)))
        actions.append(("B", *backward_of(i)))
    for k in range(total - warmup, total):
        actions.append(("B", *backward_of(k)))
    return actions


def combined(actions: list[Action]) -> list[Step]:
    """Each steady-state forward paired with the backward after it, when they are different work (a
    backward never waits on the forward it is paired with); other actions stay as they are."""
    out: list[Step] = []
    i = 0
    while i < len(actions):
        a = actions[i]
        if a[0] == "F" and i + 1 < len(actions) and actions[i + 1][0] == "B" and actions[i + 1][1:] != a[1:]:
            out.append(("FB", a, actions[i + 1]))
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def bubble_fraction_1f1b(stages: int, microbatches: int, chunks: int = 1) -> float:
    """Closed-form pipeline bubble (p-1)/(v*m + p-1) of an idealised 1F1B pipeline (SC21 eq. 1-2)."""
    return (stages - 1) / (chunks * microbatches + stages - 1)
