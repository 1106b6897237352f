"""MER-Prefer (MER2026 Track 3) end to end, as a participant runs it: pair files shaped like
``track3_candidate.csv`` (unlabelled) and ``track3_emoprefer.csv`` (labelled), synthetic media in
``video/`` and ``audio/``, the ``length`` judge and a tiny Qwen2.5-Omni judge through papermill,
then ``python -m helpers.submit``: predictions for every pair, metrics only where there are
labels, and a submission of one a1/a2 row per pair in the file's order."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny_models import VIDEO_PIXELS, build_omni_thinker, write_mp4, write_wav

from helpers import paths, submit
from helpers.run.results import NO_LABELS
from helpers.run.store import read_predictions

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("offline")]
NOTEBOOK = paths.project_root() / "notebooks" / "01_infer.ipynb"
N_PAIRS = 30


def _track3_files(folder):
    """The Track 3 layout: two pair files and one clip per video (copies of one synthetic clip)."""
    rng = np.random.default_rng(0)
    names = [f"sample_{i:08d}" for i in range(N_PAIRS)]
    words = ["happy", "tense", "calm", "angry", "sad", "surprised"]
    table = pd.DataFrame({"name": names,
                          "a1": [" ".join(rng.choice(words, int(k))) for k in rng.integers(2, 40, N_PAIRS)],
                          "a2": [" ".join(rng.choice(words, int(k))) for k in rng.integers(2, 40, N_PAIRS)]})
    (folder / "video").mkdir(parents=True)
    (folder / "audio").mkdir()
    clip, sound = write_mp4(folder / "clip.mp4"), write_wav(folder / "clip.wav")
    for name in names:
        shutil.copy(clip, folder / "video" / f"{name}.mp4")
        shutil.copy(sound, folder / "audio" / f"{name}.wav")
    table.sample(frac=1, random_state=1).to_csv(folder / "track3_candidate.csv", index=False)  # not sorted by name
    table.assign(preference=rng.choice(["a1", "a2", "same"], N_PAIRS)).to_csv(folder / "track3_emoprefer.csv",
                                                                             index=False)
    return folder / "track3_candidate.csv", folder / "track3_emoprefer.csv"


def _closing_table(executed) -> str:
    """The text of 01_infer's last output (the run's closing metrics table)."""
    cell = json.loads(executed.read_text())["cells"][-1]
    texts = [o.get("data", {}).get("text/plain", "") for o in cell["outputs"]]
    return "".join("".join(t) if isinstance(t, list) else t for t in texts)


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason="notebooks/01_infer.ipynb missing")
def test_candidate_and_labelled_pair_files_through_papermill_to_a_submission(tmp_path, monkeypatch):
    import papermill

    root = tmp_path / "project"
    shutil.copytree(paths.params_dir(), root / "params")
    (root / "pyproject.toml").write_text("")
    (root / "params" / "models" / "tiny_omni.yaml").write_text(yaml.safe_dump({
        "name": "tiny_omni", "family": "qwen25omni", "backend": "local", "input_type": "audiovideo",
        "checkpoint": str(build_omni_thinker(tmp_path / "omni")), "batch_size": 16,
        "generation": {"max_new_tokens": 2},
        "options": {"system_prompt": "system_omni",
                    "video_min_pixels": VIDEO_PIXELS["shortest_edge"], "video_max_pixels": VIDEO_PIXELS["longest_edge"]},
    }))
    monkeypatch.setenv("EMOPREFER_ROOT", str(root))
    mer = tmp_path / "mer2026-dataset"
    candidate, labelled = _track3_files(mer)
    monkeypatch.setenv("MER2026_DATA", str(mer))
    store = tmp_path / "store"
    runs = {}
    for model, strategy in (("length", "-"), ("tiny_omni", "S1")):
        for dataset in ("track3_candidate", str(labelled)):
            executed = tmp_path / f"{model}-{len(runs)}.ipynb"
            papermill.execute_notebook(
                str(NOTEBOOK), str(executed), cwd=str(NOTEBOOK.parent), progress_bar=False,
                parameters={"model": model, "strategy": strategy, "dataset": dataset, "rounds": 1,
                            "engine": "transformers", "media_dir": str(mer), "output_dir": str(store)})
            runs[model, dataset] = _closing_table(executed)
    table = read_predictions(store)
    for (model, dataset), closing in runs.items():
        name = "track3_candidate" if dataset == "track3_candidate" else "file-track3_emoprefer"
        rows = table[(table["judge"] == model) & (table["dataset"] == name)]
        assert len(rows) == N_PAIRS * 2 and rows["name"].nunique() == N_PAIRS  # every pair, both orders
        assert (NO_LABELS in closing) == (dataset == "track3_candidate")
        assert rows["gt"].isna().all() == (dataset == "track3_candidate")
    out = tmp_path / "submission.csv"
    omni_run = next(iter(table.loc[(table["judge"] == "tiny_omni") & (table["dataset"] == "track3_candidate"), "run_id"]))
    length_run = "length__cpu__text__track3_candidate"
    assert submit.main([omni_run, length_run, "--store", str(store), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert len(written) == N_PAIRS and list(written["name"]) == list(pd.read_csv(candidate)["name"])
    assert set(written["preference"]) <= {"a1", "a2"}
