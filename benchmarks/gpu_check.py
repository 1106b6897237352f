"""A prepared check for a machine with one CUDA GPU and no internet (torch + transformers, no vLLM).

    python benchmarks/gpu_check.py [--out gpu_check.json] [--skip-tests]

1. runs the transformers backend tests on CUDA (``tests/test_hf_backend.py``,
   ``tests/test_backend_specs.py``: on a CUDA machine the backend places models with
   ``device_map`` and the bf16 test runs in bf16 on the GPU);
2. checks that a bf16 batch of greedy requests answers exactly as the requests one by one;
3. checks that GPU memory returns to ~0 after ``close()`` and that a second model then loads;
4. measures peak memory and pairs/s of randomly initialised 7B-shaped models through the real
   request path of :class:`helpers.judges.hf.TransformersBackend`: the Qwen2.5-Omni
   thinker at batch 4 on 720p audio-video clips, and Qwen2.5-7B at batch 8 x 512 new tokens.

Everything is built here (tokenizer, processor, random weights, synthetic clips); nothing is
downloaded. The figures go to a JSON file. It aims to finish in under 8 minutes on one recent
GPU. Without CUDA it says so, writes a JSON saying it was skipped, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
GIB = 1024**3


def cuda_ready() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    from helpers.judges.hf import cuda_report

    return bool(torch.cuda.is_available()), cuda_report()


def run_backend_tests(timeout_s: int = 240) -> dict:
    """The transformers backend tests, on this machine (CUDA is picked up by the backend)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               "tests/test_hf_backend.py", "tests/test_backend_specs.py"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        tail, rc = (done.stdout + done.stderr)[-2000:], done.returncode
    except subprocess.TimeoutExpired:
        tail, rc = f"timed out after {timeout_s} s", 124
    return {"passed": rc == 0, "returncode": rc, "seconds": round(time.perf_counter() - start, 1), "tail": tail}


def gpu_memory_gib() -> float:
    import torch

    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / GIB


def tiny_batch_matches_single(folder: Path) -> dict:
    """bf16 on the GPU: a left-padded greedy batch answers as the requests one by one."""
    from tiny_models import build_text_lm

    from helpers.judges.base import JudgeSpec, Request
    from helpers.judges.hf import TransformersBackend

    spec = JudgeSpec(name="tiny", family="text", backend="local", checkpoint=str(build_text_lm(folder)),
                     batch_size=4, generation={"max_new_tokens": 16, "do_sample": False, "repetition_penalty": 1.0},
                     options={"dtype": "bfloat16"})
    backend = TransformersBackend(spec)
    prompts = ["a1", "We provide two descriptions: a1 and a2.", "The woman smiles and speaks softly.", "same?"]
    requests = [Request(f"k{i}", p) for i, p in enumerate(prompts)]
    batched = [r.text for r in backend.generate(requests)]
    single = [backend.generate([r])[0].text for r in requests]
    info = dict(backend.info)
    backend.close()
    return {"equal": batched == single, "dtype": info.get("dtype"), "device": info.get("device"),
            "mismatches": [i for i, (a, b) in enumerate(zip(batched, single, strict=True)) if a != b]}


def seven_b_text(tokenizer_folder: Path):
    """Qwen2.5-7B-Instruct's shape (28 layers, hidden 3584, 28/4 heads, vocab 152064), random, bf16."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         eos_token_id=None, pad_token_id=0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = None  # random weights: never stop early, time all tokens
    return model.eval()


def seven_b_thinker(tokenizer):
    """Qwen2.5-Omni-7B's thinker shape (transformers' defaults for the config are the 7B's), with
    the placeholder ids of the tokenizer built here."""
    import torch
    from tiny_models import OMNI_TOKENS
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in OMNI_TOKENS.items()}
    config = Qwen2_5OmniThinkerConfig(
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"], user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    with torch.device("cuda"):
        model = Qwen2_5OmniThinkerForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    return model.eval()


def attach(backend, model, tokenizer, processor=None) -> None:
    """Give a backend an in-memory model (random 7B weights are not worth writing to disk)."""
    backend.model, backend.tokenizer, backend.processor = model, tokenizer, processor
    backend.device = next(model.parameters()).device
    tokenizer.padding_side = "left"


def measure(backend, requests, batch: int) -> dict:
    """Peak memory and pairs/s of one warm-up batch then one timed batch."""
    import torch

    backend.generate(requests[:batch])  # warm-up: kernels, allocator
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    backend.generate(requests[:batch])
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"batch": batch, "seconds": round(seconds, 2), "pairs_per_s": round(batch / seconds, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2)}


def text_llm_throughput(folder: Path) -> tuple[dict, float]:
    from tiny_models import build_tokenizer

    from helpers.judges.base import JudgeSpec, Request
    from helpers.judges.hf import TransformersBackend

    tokenizer = build_tokenizer(folder / "tok")
    spec = JudgeSpec(name="qwen25_7b_shape", family="text", backend="local", checkpoint=str(folder / "tok"),
                     batch_size=8, generation={"max_new_tokens": 512, "do_sample": False, "repetition_penalty": 1.0})
    backend = TransformersBackend(spec)
    attach(backend, seven_b_text(folder), tokenizer)
    prompt = ("We provide a ground truth description: The woman smiles and speaks softly; her tone is calm "
              "and happy. " * 12)
    result = measure(backend, [Request(f"k{i}", prompt + str(i)) for i in range(8)], 8)
    result["new_tokens"] = 512
    loaded = gpu_memory_gib()
    backend.close()
    return result, loaded


def omni_throughput(folder: Path) -> dict:
    from tiny_models import CHAT_TEMPLATE, build_tokenizer, write_mp4
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    from helpers.judges.base import JudgeSpec, Media, Request
    from helpers.judges.hf import TransformersBackend

    tokenizer = build_tokenizer(folder / "omni_tok")
    processor = Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                     feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer,
                                     chat_template=CHAT_TEMPLATE)
    clips = [write_mp4(folder / f"clip{i}.mp4", seconds=4.0, fps=25, size=(720, 1280), tone_hz=300 + 50 * i)
             for i in range(4)]
    spec = JudgeSpec(name="omni_7b_shape", family="qwen25omni", backend="local", checkpoint=str(folder / "omni_tok"),
                     input_type="audiovideo", batch_size=4,
                     generation={"max_new_tokens": 128, "do_sample": False, "repetition_penalty": 1.0})
    backend = TransformersBackend(spec)
    attach(backend, seven_b_thinker(tokenizer), tokenizer, processor)
    requests = [Request(f"k{i}", "Please provide a detailed description to a given video, especially focusing "
                        "on their emotions.", media=Media("audiovideo", video=clip)) for i, clip in enumerate(clips)]
    result = measure(backend, requests, 4)
    result.update(new_tokens=128, clip="4 s, 1280x720, 25 fps, 16 kHz tone; fps 2 sampling")
    backend.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_check.json"))
    parser.add_argument("--skip-tests", action="store_true", help="skip step 1 (the pytest run)")
    args = parser.parse_args(argv)
    ready, report = cuda_ready()
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                     "cuda": report}
    if not ready:
        print(f"gpu_check: no usable CUDA GPU ({report}); nothing to check here, skipping.")
        figures["status"] = "skipped: no CUDA"
        Path(args.out).write_text(json.dumps(figures, indent=2))
        return 0
    import torch
    import transformers

    figures.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, transformers=transformers.__version__)
    started = time.perf_counter()
    if not args.skip_tests:
        figures["backend_tests"] = run_backend_tests()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures["batched_greedy_equals_single"] = tiny_batch_matches_single(folder / "tiny")
        baseline = gpu_memory_gib()
        text, loaded = text_llm_throughput(folder)
        after_close = gpu_memory_gib()
        figures["qwen25_7b_shape"] = text
        figures["omni_thinker_7b_shape"] = omni_throughput(folder)
        figures["memory"] = {"before_gib": round(baseline, 2), "text_llm_loaded_gib": round(loaded, 2),
                             "after_close_gib": round(after_close, 2),
                             "returned_to_zero": after_close - baseline < 0.5,
                             "second_model_loaded": "omni_thinker_7b_shape" in figures}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["status"] = "ok" if figures["memory"]["returned_to_zero"] and figures[
        "batched_greedy_equals_single"]["equal"] and figures.get("backend_tests", {"passed": True})["passed"] else "failed"
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0 if figures["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
