"""The one home of secrets: which values are API keys, and how they are masked.

A judge behind an API holds its key in an environment variable whose NAME is in the judge's
YAML (``api_key_env``). The key must never reach a file or a message: an endpoint that echoes
the Authorization header would put it into ``predictions.jsonl``, an error body can quote it, a
careless backend can report it in its ``info``. Every such path masks through :func:`redact`,
so the replacement text and the rule for what counts as a key are the same everywhere.

This module imports nothing of the project, so ``helpers.judges`` and ``helpers.run`` can both
use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

MIN_SECRET_LEN = 8
"""A value shorter than this is not a key: local servers take placeholders such as ``EMPTY``,
and masking a short value would rewrite ordinary words in the answers and messages."""


def mask(name: str) -> str:
    """The text that stands where the value of the variable ``name`` was: it says which key was
    there without saying the key."""
    return f"[redacted:{name}]"


def redact(value, secrets: dict[str, str] | None):
    """``value`` with every secret replaced by ``[redacted:<VARIABLE>]``, in every string of
    nested dicts, lists and tuples (tuples come back as lists: the result is bound for JSON).

    ``secrets`` maps a variable's NAME to its value. Values are compared stripped of surrounding
    whitespace (a key read from a file often ends in a newline), and a value shorter than
    :data:`MIN_SECRET_LEN` is not a secret and is left in place.
    """
    found = {name: secret.strip() for name, secret in (secrets or {}).items()
             if secret and len(secret.strip()) >= MIN_SECRET_LEN}
    return _replace(value, found) if found else value


def _replace(value, secrets: dict[str, str]):
    if isinstance(value, dict):
        return {k: _replace(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(v, secrets) for v in value]
    if isinstance(value, str):
        for name, secret in secrets.items():
            if secret in value:
                value = value.replace(secret, mask(name))
    return value


def secrets_from_env(names: Iterable[str | None]) -> dict[str, str]:
    """The values of the named key variables that are set and long enough to be keys
    (``{NAME: value}``, for :func:`redact`); unset names and ``None`` are skipped."""
    found = {}
    for name in dict.fromkeys(n for n in names if n):
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LEN:
            found[name] = value
    return found
