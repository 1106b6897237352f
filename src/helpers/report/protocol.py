"""The protocol card: every model judge's decoding, media and prompt settings as its YAML states
them, beside the settings of the paper's released code, with each difference named.

Why: a reproduction that decodes or samples frames differently runs a different experiment, and
such differences hide in library defaults. The card is computed from ``params/models/*.yaml``
(through the same :mod:`helpers.judges.decoding` the backends use) and
``params/paper_protocol.yaml``, so it cannot drift from what a run sends.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from helpers import paths
from helpers.judges import decoding
from helpers.judges.base import JudgeSpec
from helpers.judges.families import FAMILIES
from helpers.judges.registry import list_judges, load_spec

COMPARED = ("engine", "api", "video_timing", "frame_rule", "model", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
            "fps", "num_frames", "max_frames", "max_pixels", "frames", "text_first", "seed", "describe_prompt")
OPENAI_API = "chat completions (image_url parts)"
"""The OpenAI-compatible endpoint the API judges call (``helpers.judges.openai``): chat completions
serve every vendor here; the paper's GPT wrapper used the Responses API, a difference the card shows."""
FRAME_RULES = {"linspace": "linspace(0, n - 1) (LanguageBind)"}
"""How a family's ``frame_rule`` reads on the card (the rule in ``helpers.judges.media``)."""
NOT_RUNNABLE = {
    "llamavid": ("YanweiLi/llama-vid-7b-full-224-video-fps-1",
                 "MER2026 Track 3 baseline (utils/llamavid.py) with no transformers or vLLM implementation: it needs "
                 "the authors' own llamavid package, so this study cannot run it"),
}
"""Judges of the authors' baselines that no engine here implements: listed on the card, with why."""
MEDIA_DEFAULTS = {"qwen25omni": {"fps": 2.0}, "qwen25vl": {"fps": 2.0}, "llavanextvideo": {"num_frames": 8}}


def paper_protocol(file: str | Path | None = None) -> dict[str, dict]:
    """The paper's settings per judge (``params/paper_protocol.yaml``)."""
    path = Path(file) if file else paths.params_dir() / "paper_protocol.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("judges", {})


def judge_settings(spec: JudgeSpec) -> dict:
    """What this judge sends, in the card's field names."""
    options = spec.options
    out: dict = {"model": spec.checkpoint, "describe_prompt": options.get("describe_prompt", "describe_input"),
                 "system_prompt": options.get("system_prompt")}
    if spec.backend == "openai":
        out.update({k: v for k, v in decoding.normalise(spec.generation).items()})
        out.update(frames=options.get("frames", "uniform"), text_first=bool(options.get("text_first", False)),
                   seed=bool(options.get("send_seed", True)), api=OPENAI_API)
        if out["frames"] == "uniform":
            out["num_frames"] = int(options.get("num_frames", 8))
        elif out["frames"] == "emoprefer_gpt":
            out["max_frames"] = int(options.get("max_frames", 3))
        else:
            out["fps"] = float(options.get("fps", 1.0))
        return out
    out.update(decoding.protocol(spec))
    out["engine"] = options.get("engine", "transformers")
    if FAMILIES[spec.family].timed_frames:
        out["video_timing"] = options.get("video_timing", "paper")
    if FAMILIES[spec.family].num_frames is not None or "num_frames" in options:
        out["frame_rule"] = FRAME_RULES.get(FAMILIES[spec.family].frame_rule, "transformers 4.49 arange")
    media = {**MEDIA_DEFAULTS.get(spec.family, {}), **{k: options[k] for k in ("fps", "num_frames") if k in options}}
    if spec.input_type in ("video", "audiovideo"):
        out.update(media)
        if "video_max_pixels" in options:
            out["max_pixels"] = int(options["video_max_pixels"])
    return out


def vllm_engine(spec: JudgeSpec) -> str:
    """A local judge's vLLM engine settings as its YAML states them (sized by ``helpers.judges.fit``)."""
    if spec.backend != "local":
        return "-"
    o = spec.options
    if not all(k in o for k in ("max_model_len", "gpu_memory_utilization", "max_num_seqs")):
        return "not stated (vLLM's defaults)"
    return (f"max_model_len {o['max_model_len']}, gpu_memory_utilization {o['gpu_memory_utilization']:g}, "
            f"max_num_seqs {o['max_num_seqs']}" + (f", clips <= {o['max_clip_s']:g} s" if "max_clip_s" in o else ""))


def describe_media(s: dict) -> str:
    parts = []
    if s.get("frames") == "emoprefer_gpt":
        parts.append(f"{s.get('max_frames', 3)} frames (1 fps for clips <= {s.get('max_frames', 3)} s)")
    elif s.get("frames") not in (None, "uniform", "emoprefer_gpt", "fps"):
        parts.append(str(s["frames"]))
    if "num_frames" in s:
        parts.append(f"{s['num_frames']} frames")
    if "fps" in s and s.get("frames") in (None, "fps"):
        parts.append(f"frames at fps {s['fps']:g}")
    if "max_pixels" in s:
        parts.append(f"<= {s['max_pixels']} px/frame")
    if "text_first" in s:
        parts.append("text first" if s["text_first"] else "media first")
    return ", ".join(parts) or "-"


def differences(ours: dict, paper: dict) -> list[str]:
    """Each compared field the paper set that this judge sends otherwise."""
    out = []
    for field in COMPARED:
        if field in paper and ours.get(field) != paper[field]:
            if field == "temperature" and not ours.get("do_sample") and not paper.get("do_sample"):
                continue
            out.append(f"{field}: {ours.get(field)!r} (paper {paper[field]!r})")
    return out


def protocol_card(models_dir: str | Path | None = None, paper_file: str | Path | None = None) -> pd.DataFrame:
    """One row per model judge (local and API): backend, checkpoint, decoding, media, prompts,
    the paper's settings, and the differences between the two ("none" where they agree)."""
    paper = paper_protocol(paper_file)
    rows = []
    for name in list_judges(models_dir):
        spec = load_spec(name, models_dir)
        if spec.backend == "cpu":
            continue
        ours = judge_settings(spec)
        theirs = paper.get(name)
        backend = (ours["engine"] if spec.backend == "local" else f"OpenAI-compatible ({spec.api_base})")
        rows.append({
            "judge": name, "backend": backend, "checkpoint": spec.checkpoint, "input_type": spec.input_type,
            "decoding": decoding.describe(ours, spec.backend), "media": describe_media(ours),
            "vllm_engine": vllm_engine(spec),
            "prompt": ours["describe_prompt"] + (f" + system {ours['system_prompt']}" if ours["system_prompt"] else ""),
            "paper_decoding": decoding.describe(theirs, spec.backend) if theirs else "not in the paper",
            "paper_media": describe_media(theirs) if theirs else "not in the paper",
            "paper_source": theirs.get("source", "") if theirs else "",
            "differences": ("; ".join(differences(ours, theirs)) or "none") if theirs else "not in the paper",
        })
    for name, (checkpoint, why) in NOT_RUNNABLE.items():
        rows.append({"judge": name, "backend": "none (not runnable here)", "checkpoint": checkpoint,
                     "input_type": "video", "decoding": "-", "media": "-", "prompt": "-",
                     "paper_decoding": "not in the paper", "paper_media": "not in the paper", "paper_source": "",
                     "differences": why})
    return pd.DataFrame(rows)
