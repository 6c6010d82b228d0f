"""The project's exception types; each one owns its exit code and its one-line user message."""

from __future__ import annotations


class AttnReportError(Exception):
    """Base class: a problem the user can act on. Carries a message and a hint for the fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format_message(self) -> str:
        """One line for stderr: what is wrong, then what to do."""
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            text += f". {hint[:1].upper()}{hint[1:]}"
            text += "" if hint.endswith(("?", "!")) else "."
        else:
            text += "."
        return " ".join(text.split())


class InputError(AttnReportError):
    """A bad argument, file or option given by the user."""


class ModelLoadError(AttnReportError):
    """The model could not be found, read or loaded."""


class UnsupportedModelError(AttnReportError):
    """The model loads but exposes nothing this tool can analyse."""


class CaptureCheckError(AttnReportError):
    """An attention map failed a sanity check (finite, rows sum to 1, causal mask)."""


class OutputError(AttnReportError):
    """An output path cannot be written."""
