"""The one sha256 helper: hex digests of text, bytes, a file or a module's source, whole or cut
to a named length.

The cut lengths below are part of stored names and keys (run identities in manifests, cached
step keys in ``steps.jsonl``, tournament run folders, system ids in comparison ids). Changing a
length changes every such name, so an existing store would no longer be found: resumed runs
would start over and cached texts would be made again. Never change one; add a new constant for
a new use instead. Each is as short as it may be while a collision among the few values it
tells apart stays out of reach, because each ends up in something a person reads (a manifest,
a folder name, an id).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

PROMPT_HASH_LEN = 16
"""``prompts.prompt_hashes`` (templates) and ``prompts.text_hash`` (texts actually sent):
64 bits, part of every run identity (``run.identity.prompt_identity``) and of the cached steps'
identities, where a collision would call two different prompts the same; still short enough to
read beside the template's name in a manifest."""

STEP_ID_LEN = 12
"""``run.strategies.step_identity``: 48 bits, repeated in the key of every cached step row
(``steps.jsonl``), so kept shorter; it only has to tell apart the few model/prompt
configurations whose steps meet in one run folder."""

PAIRS_DIGEST_LEN = 10
"""``tournament.judge.pairs_digest``: 40 bits in every tournament run folder's name (twice when
a judge learns from labels), which must stay below the store's run id limit of 200 characters;
it tells apart the few edits of one table's texts."""

SYSTEM_ID_LEN = 8
"""``tournament.table.system_id``: 32 bits after a readable slug of up to 40 characters, in
comparison ids and paths; it tells apart the handful of system names of one table whose slugs
coincide (``GPT-4o (2024-08-06)`` and ``GPT-4o 2024-08-06``)."""


def sha256_hex(data: str | bytes, length: int | None = None) -> str:
    """The hex sha256 of ``data`` (text is hashed as UTF-8), cut to its first ``length`` hex
    digits when given (one of the named lengths above); the whole 64 digits otherwise."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    digest = hashlib.sha256(raw).hexdigest()
    return digest if length is None else digest[:length]


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks (a data file, a released output)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_sha256(module: str) -> str:
    """The hex sha256 of a module's source file as it is on disk now (``"no source"`` for a
    module without one), found without running it: a backend module may import an engine this
    machine lacks, and what a run records is the code, not whether it imports."""
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    return sha256_file(origin) if origin is not None and origin.is_file() else "no source"
