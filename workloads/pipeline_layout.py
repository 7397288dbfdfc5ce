"""Megatron-Core pipeline layouts (``--pipeline-model-parallel-layout``) read into layers per chunk.

Megatron writes an uneven pipeline split as a string such as DeepSeek-V3's ``Et*4|(t*4|)*14tmL``: one
``|``-separated entry per model chunk (pp·vp of them, in model order), ``E`` the embedding, ``t`` a
transformer layer, ``m`` a multi-token-prediction depth, ``L`` the output layer and loss, ``x*N`` a
repetition of the token or parenthesised group before it (spaces and commas are cosmetic, as in Megatron).
Recipes publish these strings, so racksim reads them as written instead of asking users to count the ``t`` s
into ``parallelism.layers_per_chunk``. racksim runs MTP with the loss, so ``m`` must sit in the last chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from simcore.errors import ConfigError

MAX_EXPANDED = 1_000_000  # tokens after expanding the repeats (a model of a million layers is a typo)

_EXPECTED = (
    "Megatron's layout: chunks separated by |, E embedding, t transformer layer, m MTP depth, L loss, "
    "x*N or (...)*N repeats (e.g. 'Et*4|(t*4|)*14tmL')"
)


def _expand(text: str, pos: int, depth: int, fail: Callable[[str], NoReturn]) -> tuple[str, int]:
    """Expand repetitions from ``pos`` up to the matching ``)`` (or the end at depth 0)."""
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == ")":
            if depth == 0:
                fail(f"a ')' at character {pos + 1} without its '('")
            return "".join(out), pos + 1
        if char == "(":
            item, pos = _expand(text, pos + 1, depth + 1, fail)
        elif char in "EtmL|":
            item, pos = char, pos + 1
        else:
            fail(f"unknown character {char!r} at character {pos + 1}")
        if pos < len(text) and text[pos] == "*":
            end = pos + 1
            while end < len(text) and text[end].isdigit():
                end += 1
            if end == pos + 1:
                fail(f"'*' at character {pos + 1} without a count after it")
            count = int(text[pos + 1 : end])
            if len(item) * count > MAX_EXPANDED:
                fail(f"'*{count}' at character {pos + 1} repeats to more than {MAX_EXPANDED:,} tokens")
            item *= count
            pos = end
        out.append(item)
    if depth:
        fail("a '(' without its ')'")
    return "".join(out), pos


def layers_per_chunk(layout: str, *, mtp_layers: int, file: str | None, path: str) -> tuple[int, ...]:
    """Transformer layers of each chunk of ``layout``; the embedding must open the first chunk, MTP depths
    and the loss close the last one (where racksim places them), and the MTP depths must be the model's."""

    def fail(message: str) -> NoReturn:
        raise ConfigError(message, file=file, path=path, value=layout, expected=_EXPECTED)

    # Megatron drops spaces and commas as cosmetic ("Ettt|(tt|)*29,m|L" in its docs)
    expanded, _ = _expand("".join(layout.replace(",", " ").split()), 0, 0, fail)
    chunks = expanded.split("|")  # a trailing "|" is an empty last chunk, as Megatron counts it
    if expanded.count("E") != 1 or not chunks[0].startswith("E"):
        fail("the embedding (E) must open the first chunk, once")
    if expanded.count("L") != 1 or not chunks[-1].endswith("L"):
        fail("the loss (L) must close the last chunk, once")
    last = chunks[-1]
    if expanded.count("m") != last.count("m") or (last.count("m") and not last.rstrip("L").endswith("m")):
        fail("racksim runs the MTP depths (m) after the last chunk's layers, before the loss")
    if last.count("m") != mtp_layers:
        fail(f"the layout has {last.count('m')} MTP depths (m) but the model has mtp_layers = {mtp_layers}")
    return tuple(chunk.count("t") for chunk in chunks)
