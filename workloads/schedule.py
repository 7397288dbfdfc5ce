"""Pipeline schedules: the order in which one pipeline stage runs forward and backward passes.

Pure functions over integers (no simpy), so they are easy to test: ``one_f_one_b`` is PipeDream-Flush /
Megatron 1F1B; ``interleaved`` is Megatron's interleaved 1F1B with ``vp`` model chunks per stage
(Narayanan et al. SC21 section 2.2). An action is ``(phase, micro_batch, chunk)`` with phase "F" or "B".
"""

from __future__ import annotations

Action = tuple[str, int, int]


def one_f_one_b(stage: int, stages: int, microbatches: int) -> list[Action]:
    """Warm-up forwards, steady one-forward-one-backward, cool-down backwards."""
    warmup = min(stages - stage - 1, microbatches)
    actions: list[Action] = [("F", m, 0) for m in range(warmup)]
    for i in range(microbatches - warmup):
        actions.append(("F", warmup + i, 0))
        actions.append(("B", i, 0))
    actions.extend(("B", m, 0) for m in range(microbatches - warmup, microbatches))
    return actions


def interleaved(stage: int, stages: int, microbatches: int, chunks: int) -> list[Action]:
    """Megatron's interleaved schedule: micro-batches move through chunks in groups of ``stages``."""
    if chunks == 1:
        return one_f_one_b(stage, stages, microbatches)
    total = microbatches * chunks

    def forward_of(k: int) -> tuple[int, int]:
        group, within = divmod(k, stages * chunks)
        chunk = within // stages
        return group * stages + within % stages, chunk

    def backward_of(k: int) -> tuple[int, int]:
        mb, chunk = forward_of(k)
        return mb, chunks - 1 - chunk

    warmup = min((stages - stage - 1) * 2 + (chunks - 1) * stages, total)
    actions: list[Action] = []
    for k in range(warmup):
        actions.append(("F", *forward_of(k)))
    for i in range(total - warmup):
        actions.append(("F", *forward_of(warmup + i)))
        actions.append(("B", *backward_of(i)))
    for k in range(total - warmup, total):
        actions.append(("B", *backward_of(k)))
    return actions


def bubble_fraction_1f1b(stages: int, microbatches: int, chunks: int = 1) -> float:
    """Closed-form pipeline bubble (p-1)/(v*m + p-1) of an idealised 1F1B pipeline (SC21 eq. 1-2)."""
    return (stages - 1) / (chunks * microbatches + stages - 1)
