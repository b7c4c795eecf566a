"""What the command-line tools share: a parser whose errors are one line (exit 2), checked
number arguments, and reading a model argument as a user input (its errors are one line too)."""
from __future__ import annotations

import argparse
import math


class UsageError(Exception):
    """A mistake in the command line or in a file it names: reported in one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'prog: error: what is wrong', exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def read_model(model: str, input_shape=None) -> list:
    """The model argument (built-in name, .json suite, .onnx file) -> its layers; UsageError
    naming the model and the reason when it cannot be read."""
    import os

    from .layers import collect_layers

    if model.lower().endswith((".onnx", ".json")) and not os.path.exists(model):
        raise UsageError(f"model {model!r}: no such file")
    try:
        return collect_layers(model, input_shape)
    except FileNotFoundError:
        raise UsageError(f"model {model!r}: no such file") from None
    except ImportError as exc:
        raise UsageError(f"model {model!r}: {exc}") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"model {model!r}: {_reason(exc)}") from None
    except Exception as exc:  # a parser's own error type (onnx/protobuf DecodeError, ...)
        raise UsageError(f"model {model!r} cannot be read: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """The exception's first line; its type where the text alone does not say what it is."""
    import json

    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({text})"
    if isinstance(exc, ValueError) and text:
        return text
    return f"{type(exc).__name__}: {text}"
