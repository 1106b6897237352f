"""The one sha256 helper gives, at each named length, exactly the digests the stores hold.

Run identities, cached step keys, tournament folders and system ids were made with
``hashlib.sha256(...).hexdigest()[:n]`` before ``helpers.digest`` existed; a different length or
encoding would orphan every existing store, so each use is pinned against hashlib directly.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from helpers import digest, prompts
from helpers.run import strategies
from helpers.tournament import judge as tournament_judge
from helpers.tournament import table

SAMPLE = "Describe the emotion — façade, 表情\n"


def hashlib_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_each_named_length_keeps_the_length_the_stores_were_made_with():
    assert (digest.PROMPT_HASH_LEN, digest.STEP_ID_LEN, digest.PAIRS_DIGEST_LEN, digest.SYSTEM_ID_LEN) == (16, 12, 10, 8)
    for length in (16, 12, 10, 8):
        assert digest.sha256_hex(SAMPLE, length) == hashlib_hex(SAMPLE)[:length]


def test_whole_digests_of_text_and_bytes_equal_hashlibs():
    assert digest.sha256_hex(SAMPLE) == hashlib_hex(SAMPLE) and len(digest.sha256_hex(SAMPLE)) == 64
    assert digest.sha256_hex(SAMPLE.encode("utf-8")) == hashlib_hex(SAMPLE)
    assert digest.sha256_hex(b"\x00\xff") == hashlib.sha256(b"\x00\xff").hexdigest()


def test_every_shortened_use_gives_the_digest_it_gave_before():
    templates = prompts.load_prompts()
    assert prompts.prompt_hashes() == {key: hashlib_hex(text)[:16] for key, text in templates.items()}
    assert prompts.text_hash(SAMPLE) == hashlib_hex(SAMPLE)[:16] and prompts.text_hash(None) is None
    parts = {"step": "describe", "checkpoint": "x/y", "prompts": {"describe": "0123"}}
    assert strategies.step_identity(**parts) == hashlib_hex(json.dumps(parts, sort_keys=True, ensure_ascii=False))[:12]
    pairs = pd.DataFrame({"name": ["b", "a"], "a1": ["t1", "t2"], "a2": ["u1", "u2"]})
    assert tournament_judge.pairs_digest(pairs) == hashlib_hex(json.dumps([["a", "t2", "u2"], ["b", "t1", "u1"]]))[:10]
    assert table.system_id("GPT-4o (2024-08-06)") == f"GPT-4o-2024-08-06-{hashlib_hex('GPT-4o (2024-08-06)')[:8]}"
