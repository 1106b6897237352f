"""Issue 18 item 10: a full Qwen2.5-Omni checkpoint pinned to a revision loads offline when only
that revision is in the HF cache, although transformers looks ``spk_dict.pt`` up without the
revision (``Qwen2_5OmniForConditionalGeneration.from_pretrained`` pops ``revision`` from
``kwargs``, where it never is). A fake HF cache holds a tiny hub-layout checkpoint under one
commit and no ``refs/main``; each side runs in a fresh interpreter so that ``HF_HUB_CACHE`` applies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from tiny_models import build_omni_full

pytestmark = pytest.mark.usefixtures("offline")
REPO, COMMIT = "tiny-org/tiny-omni", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(omni, tmp_path_factory):
    """An HF cache with the checkpoint at ``COMMIT`` only (no branch ref: as after a pinned download)."""
    full = build_omni_full(tmp_path_factory.mktemp("omni_full"), omni)
    cache = tmp_path_factory.mktemp("hub")
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    shutil.copytree(full, snapshot)
    return cache, snapshot


def run_python(code: str, cache) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_transformers_still_looks_the_speakers_up_without_the_revision(hub_cache):
    """The bug the backend works around (when this fails, transformers fixed it: drop omni_source)."""
    out = run_python(f"""
        import json, transformers
        try:
            transformers.Qwen2_5OmniForConditionalGeneration.from_pretrained(
                {REPO!r}, revision={COMMIT!r}, local_files_only=True, enable_audio_output=False)
            print(json.dumps({{"error": None}}))
        except Exception as exc:
            print(json.dumps({{"error": str(exc)}}))
    """, hub_cache[0])
    assert out["error"] is not None


@pytest.mark.slow
def test_the_backend_loads_the_pinned_revision_offline_from_its_snapshot(hub_cache):
    cache, snapshot = hub_cache
    out = run_python(f"""
        import json
        from helpers.judges.base import JudgeSpec
        from helpers.judges.hf import TransformersBackend
        spec = JudgeSpec(name="tiny_omni", family="qwen25omni", backend="local", checkpoint={REPO!r},
                         input_type="audiovideo", options={{"revision": {COMMIT!r}, "device": "cpu"}})
        backend = TransformersBackend(spec)
        backend.load()
        print(json.dumps({{k: backend.info[k] for k in ("model_class", "local_path", "revision")}}))
    """, cache)
    assert out == {"model_class": "Qwen2_5OmniThinkerForConditionalGeneration", "local_path": str(snapshot),
                   "revision": COMMIT}
