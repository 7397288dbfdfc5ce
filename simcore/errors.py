"""User-facing errors: one clear line naming the file, the field path, the value and what was expected.

Every error a user can cause with bad input is a ``RacksimError``; the CLI prints ``str(err)`` and exits
with code 2. Anything else escaping is a bug in racksim and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class RacksimError(Exception):
    """Base class for errors caused by user input (exit code 2, no traceback)."""

    exit_code = 2


class ConfigError(RacksimError):
    """A profile, workload spec or CLI value is wrong.

    ``file`` and ``path`` locate the field (``path`` like ``scale_up.bandwidth``), ``value`` is what the
    user wrote and ``expected`` says what would have been accepted. ``reads`` lists the other fields a
    cross-field rule compared it with, so a ``--set`` of any of them is named as the cause.
    """

    def __init__(
        self,
        message: str = "",
        *,
        file: str | None = None,
        path: str | None = None,
        value: Any = None,
        expected: str | None = None,
        hint: str | None = None,
        reads: tuple[str, ...] = (),
    ) -> None:
        self.reads = reads
        self.file = file
        self.path = path
        self.value = value
        self.expected = expected
        self.hint = hint
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
        if self.path:
            where = f"{where}: {self.path}" if where else self.path
        parts: list[str] = []
        if self.message:
            parts.append(self.message)
        if self.value is not None:
            parts.append(f"got {self.value!r}")
        if self.expected:
            parts.append(f"expected {self.expected}")
        text = "; ".join(parts) if parts else "invalid value"
        if self.hint:
            text = f"{text} ({self.hint})"
        return f"{where}: {text}" if where else text


class Interrupted(RacksimError):
    """Ctrl-C stopped a command that keeps what it finished; the message says which outputs are complete
    (a bare KeyboardInterrupt would be reported as "no partial outputs were kept")."""

    exit_code = 130  # 143 when SIGTERM stopped it (set by whoever raises it)

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CapacityError(RacksimError):
    """The job does not fit: more GPUs than the cluster, or more memory than the HBM."""


class TraceError(RacksimError):
    """A trace file is missing, truncated, foreign or of an unknown format version."""
