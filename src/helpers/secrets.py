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
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

MIN_SECRET_LEN = 8
"""A value shorter than this is not a key: local servers take placeholders such as ``EMPTY``,
and masking a short value would rewrite ordinary words in the answers and messages."""


def mask(name: str) -> str:
    """The text that stands where the value of the variable ``name`` was: it says which key was
    there without saying the key."""
    return f"[redacted:{name}]"


FRAGMENT_LEN = 8
"""A run of this many characters of a key is masked wherever it stands: an endpoint that echoes
the key cut, reversed, upper-cased or without its ``sk-`` prefix still echoes 8 characters in a
row of the key or of the key reversed, in some case. Shorter runs are left alone for the reason
of :data:`MIN_SECRET_LEN` (a 7-character cut is not masked)."""


class SecretError(ValueError):
    """A key variable holds a value that cannot be a key; the message names the variable, never the value."""


def redact(value, secrets: dict[str, str] | None):
    """``value`` with every secret replaced by ``[redacted:<VARIABLE>]``, in every string of
    nested dicts, lists and tuples (tuples come back as lists: the result is bound for JSON).

    ``secrets`` maps a variable's NAME to its value. Values are compared stripped of surrounding
    whitespace (a key read from a file often ends in a newline), and a value shorter than
    :data:`MIN_SECRET_LEN` is not a secret and is left in place. Not only the key itself is
    masked but every run of :data:`FRAGMENT_LEN` or more characters of it or of it reversed,
    compared case-insensitively (see :data:`FRAGMENT_LEN`).
    """
    found = {name: _fragments(secret.strip()) for name, secret in (secrets or {}).items()
             if secret and len(secret.strip()) >= MIN_SECRET_LEN}
    return _replace(value, found) if found else value


def _fold(text: str) -> str:
    """Lower case, one character for one (so positions in the folded text are positions in ``text``)."""
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


@dataclass(frozen=True)
class _Key:
    whole: tuple[str, ...]  # the key and the key reversed, folded
    fragments: frozenset[str]  # every FRAGMENT_LEN-character window of both


def _fragments(secret: str) -> _Key:
    whole = (_fold(secret), _fold(secret)[::-1])
    windows = {text[i:i + FRAGMENT_LEN] for text in whole for i in range(len(text) - FRAGMENT_LEN + 1)}
    return _Key(whole, frozenset(windows))


def _mask_text(text: str, keys: dict[str, _Key]) -> str:
    """Mark whole keys first (the longest first, so a key never loses to another's shared piece),
    then pieces; each maximal marked run becomes the mask of the key it belongs to."""
    folded = _fold(text)
    if not any(f in folded for key in keys.values() for f in key.fragments):
        return text
    owner: list[str | None] = [None] * len(text)
    for name, key in sorted(keys.items(), key=lambda item: -len(item[1].whole[0])):
        for whole in key.whole:
            at = folded.find(whole)
            while at >= 0:
                owner[at:at + len(whole)] = [o or name for o in owner[at:at + len(whole)]]
                at = folded.find(whole, at + 1)
    for name, key in keys.items():
        for i in range(len(text) - FRAGMENT_LEN + 1):
            if folded[i:i + FRAGMENT_LEN] in key.fragments:
                owner[i:i + FRAGMENT_LEN] = [o or name for o in owner[i:i + FRAGMENT_LEN]]
    out, i = [], 0
    while i < len(text):
        if owner[i] is None:
            out.append(text[i])
            i += 1
            continue
        name = owner[i]
        while i < len(text) and owner[i] == name:
            i += 1
        out.append(mask(name))
    return "".join(out)


def _replace(value, secrets: dict[str, _Key]):
    if isinstance(value, dict):
        return {k: _replace(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(v, secrets) for v in value]
    if isinstance(value, str):
        return _mask_text(value, secrets)
    return value


def read_key(name: str) -> str | None:
    """The key in the variable ``name``, stripped of surrounding whitespace (a key pasted from a
    file often ends in a newline, which an HTTP header refuses, quoting the whole key), with a
    warning that says so; None when unset or empty. A key with whitespace or control characters
    inside is a :class:`SecretError` that names the variable, never the value."""
    raw = os.environ.get(name, "")
    key = raw.strip()
    if not key:
        return None
    if key != raw:
        warnings.warn(f"the value of ${name} had whitespace around it (a trailing newline?); it is used stripped",
                      stacklevel=2)
    if any(c.isspace() or not c.isprintable() for c in key):
        raise SecretError(f"the value of ${name} has whitespace or control characters inside it, so it is no API "
                          f"key ({len(key)} characters; the value is not shown): set it again, without line breaks")
    return key


def redact_exception(exc: BaseException, secrets: dict[str, str] | None) -> BaseException:
    """``exc`` and the exceptions chained to it (``__cause__``, ``__context__``) with their text
    arguments redacted in place, so the traceback a notebook or a log shows cannot quote a key
    (an HTTP library that quotes a refused header, a server's error)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while secrets and pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.args:
            current.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in current.args)
        pending += [current.__cause__, current.__context__]
    return exc


def secrets_from_env(names: Iterable[str | None]) -> dict[str, str]:
    """The values of the named key variables that are set and long enough to be keys
    (``{NAME: value}``, for :func:`redact`); unset names and ``None`` are skipped. Read raw and
    compared stripped, so that redaction never depends on the warning :func:`read_key` gives."""
    found = {}
    for name in dict.fromkeys(n for n in names if n):
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LEN:
            found[name] = value
    return found
