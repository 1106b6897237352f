"""A prepared check for a machine with one CUDA GPU and no internet (torch + transformers; vLLM optional).

    python benchmarks/gpu_check.py [--out gpu_check.json] [--skip-tests] [--skip-vllm] [--vllm-python PY]

1. runs the transformers backend tests on CUDA (``tests/test_hf_backend.py``,
   ``tests/test_backend_specs.py``: on a CUDA machine the backend places models with
   ``device_map`` and the bf16 test runs in bf16 on the GPU);
2. checks that a bf16 batch of greedy requests answers exactly as the requests one by one;
3. checks that GPU memory returns to ~0 after ``close()`` and that a second model then loads;
4. measures peak memory and pairs/s of randomly initialised 7B-shaped models through the real
   request path of :class:`helpers.judges.hf.TransformersBackend`: the Qwen2.5-Omni
   thinker at batch 4 on 720p audio-video clips, and Qwen2.5-7B at batch 8 x 512 new tokens;
5. where ``vllm`` imports (in ``--vllm-python``, default this interpreter: vLLM pins its own
   transformers, so it usually lives in an environment of its own) and CUDA is available, runs
   before this process touches CUDA, in a fresh process as the pipeline's: it starts an engine
   through :class:`helpers.judges.vllm.VLLMBackend` on a 2-layer checkpoint with Qwen2.5-7B's layer
   shape (random weights, built here), generates 48 greedy requests in chunks of 16, closes it and
   checks that device-wide GPU memory (NVML: the engine core is a process of its own) returns to
   within 0.5 GiB of where it was; then starts a second engine, the S3/S4 text LLM's (the paper's
   sampling), checks it answers and gives its memory back too; and checks that
   ``release_cuda()`` (and ``close()``) never initialise CUDA in a process that had not. Engines
   run eagerly (no compile, no CUDA graphs) to start in seconds; the step is killed, engines
   included, after 240 s. Without vLLM or CUDA the step is recorded as skipped, with the reason.

Everything is built here (tokenizer, processor, random weights, synthetic clips); nothing is
downloaded. The figures go to a JSON file. It aims to finish in under 8 minutes on one recent
GPU (step 5 about a minute of it). Without CUDA it says so, writes a JSON saying it was skipped
(step 5 included, with its reason), and exits 0.
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


VLLM_STEP_TIMEOUT_S = 240
"""Step 5 is killed (with its engine processes) past this; the rest of the check still runs."""
VLLM_REQUESTS, VLLM_CHUNK = 48, 16
RELEASED_BELOW_GIB = 0.5


def build_vllm_checkpoint(folder: Path) -> Path:
    """Qwen2.5-7B-Instruct's layer shape (hidden 3584, 28/4 heads of 128, MLP 18944) cut to 2 layers
    and the local tokenizer's vocabulary: random bf16 weights, ~0.9 GB, built on the CPU so that
    this process has not touched CUDA when vLLM starts (as in the pipeline)."""
    import torch
    from tiny_models import _save, build_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(folder)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=3584, intermediate_size=18944, num_hidden_layers=2,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    return _save(Qwen2ForCausalLM(config).to(torch.bfloat16), tokenizer, folder)


def device_used_gib() -> float:
    """Memory in use on GPU 0 by every process (NVML): vLLM's engine core runs in a process of its
    own, and asking torch (``mem_get_info``) would initialise CUDA here, which makes vLLM start
    its next engine with ``spawn`` instead of the pipeline's ``fork``."""
    from vllm.utils.import_utils import import_pynvml

    pynvml = import_pynvml()
    pynvml.nvmlInit()
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used / GIB
    finally:
        pynvml.nvmlShutdown()


def wait_released(baseline: float, limit_s: float = 30.0) -> tuple[float, float]:
    """Device memory after an engine closed, polled until it is back within
    :data:`RELEASED_BELOW_GIB` of ``baseline`` or ``limit_s`` passed: (GiB in use, seconds waited)."""
    start = time.perf_counter()
    used = device_used_gib()
    while used - baseline >= RELEASED_BELOW_GIB and time.perf_counter() - start < limit_s:
        time.sleep(0.5)
        used = device_used_gib()
    return used, time.perf_counter() - start


def vllm_engine_run(spec, requests, baseline: float) -> tuple[dict, list]:
    """Start ``spec``'s engine through :class:`helpers.judges.vllm.VLLMBackend`, hand it the
    requests in chunks of :data:`VLLM_CHUNK` (the first chunk's time includes the engine start),
    close it and measure what it held and what it gave back."""
    import torch

    from helpers.judges.vllm import VLLMBackend

    backend = VLLMBackend(spec)
    responses, chunk_s = [], []
    for first in range(0, len(requests), VLLM_CHUNK):
        start = time.perf_counter()
        responses += backend.generate(requests[first:first + VLLM_CHUNK])
        chunk_s.append(round(time.perf_counter() - start, 2))
    loaded = device_used_gib()
    initialised_before = torch.cuda.is_initialized()
    start = time.perf_counter()
    backend.close()
    close_s = time.perf_counter() - start
    after, waited = wait_released(baseline)
    result = {"requests": len(requests), "chunk_seconds": chunk_s,
              "in_order": [r.key for r in responses] == [r.key for r in requests],
              "non_empty": sum(bool(r.text.strip()) for r in responses), "sample": responses[0].text[:80],
              "loaded_gib": round(loaded, 2), "close_seconds": round(close_s, 2),
              "after_close_gib": round(after, 2), "release_wait_seconds": round(waited, 1),
              # "held" first, so that a release check of an engine that never took memory cannot pass
              "held_gib": round(loaded - baseline, 2),
              "returned_to_zero": after - baseline < RELEASED_BELOW_GIB and loaded - baseline > 1.0,
              "cuda_initialised_here_before_close": initialised_before,
              "cuda_initialised_here_after_close": torch.cuda.is_initialized(),
              "engine": {k: backend.info.get(k) for k in ("vllm", "dtype", "torch", "transformers")}}
    return result, responses


def vllm_check() -> dict:
    """Step 5, in a process of its own that has not touched CUDA (as the pipeline's): a judge
    engine with a chunked generate, shutdown, device memory back to ~0, then the S3/S4 text LLM's
    engine starts and answers; ``release_cuda`` never initialises CUDA here."""
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 -- any import failure means: no vLLM path on this machine
        return {"status": f"skipped: vllm is not importable here ({type(exc).__name__}: {exc})"}
    import torch

    from helpers.judges.base import JudgeSpec, Request
    from helpers.judges.decoding import PAPER_TEXT_SAMPLING
    from helpers.judges.vllm import release_cuda

    figures: dict = {"vllm": vllm.__version__, "torch": torch.__version__}
    if not torch.cuda.is_available():
        figures["status"] = f"skipped: vllm {vllm.__version__} imports but CUDA is not available"
        return figures
    before = torch.cuda.is_initialized()
    release_cuda()
    figures["release_cuda_leaves_cuda_uninitialised"] = {"before": before, "after": torch.cuda.is_initialized()}
    options = {"max_model_len": 4096, "enforce_eager": True}  # eager: start in seconds, not a compile
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        checkpoint = str(build_vllm_checkpoint(Path(tmp) / "qwen25_7b_2layers"))
        figures["checkpoint_build_seconds"] = round(time.perf_counter() - start, 1)
        baseline = device_used_gib()
        figures["baseline_gib"] = round(baseline, 2)
        judge = JudgeSpec(name="judge_shape", family="text", backend="local", checkpoint=checkpoint,
                          generation={"max_new_tokens": 64, "do_sample": False}, options=options)
        prompts = ["We provide two descriptions: a1 and a2.", "The woman smiles and speaks softly.", "same?"]
        requests = [Request(f"k{i}", f"{prompts[i % 3]} {i}", seed=i) for i in range(VLLM_REQUESTS)]
        figures["judge_engine"], _ = vllm_engine_run(judge, requests, baseline)
        text_llm = JudgeSpec(name="s3_text_llm_shape", family="text", backend="local", checkpoint=checkpoint,
                             generation={**PAPER_TEXT_SAMPLING, "max_tokens": 128}, options=options)
        figures["second_engine"], _ = vllm_engine_run(text_llm, requests[:8], baseline)
    judge_run, second = figures["judge_engine"], figures["second_engine"]
    untouched = figures["release_cuda_leaves_cuda_uninitialised"]
    ok = (judge_run["in_order"] and judge_run["returned_to_zero"] and second["in_order"] and second["non_empty"] > 0
          and second["returned_to_zero"] and not untouched["after"]
          and (judge_run["cuda_initialised_here_before_close"] or not judge_run["cuda_initialised_here_after_close"]))
    figures["status"] = "ok" if ok else "failed"
    return figures


def run_vllm_step(python: str, timeout_s: int = VLLM_STEP_TIMEOUT_S) -> dict:
    """Step 5 in a fresh interpreter (``python``: one with vLLM, which pins its own transformers),
    its whole process group killed past ``timeout_s`` so no engine core keeps the GPU."""
    import signal

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--vllm-step", str(out)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            tail = proc.communicate(timeout=timeout_s)[0][-2000:]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            tail = f"timed out after {timeout_s} s: {(proc.communicate()[0] or '')[-1500:]}"
        try:  # an engine core orphaned by a crash would hold the GPU for steps 2-4
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        result = json.loads(out.read_text()) if out.exists() else {"status": "failed: no result", "tail": tail}
    result.update(python=python, returncode=proc.returncode, seconds=round(time.perf_counter() - start, 1))
    if not result["status"].startswith(("ok", "skipped")):
        result.setdefault("tail", tail)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_check.json"))
    parser.add_argument("--skip-tests", action="store_true", help="skip step 1 (the pytest run)")
    parser.add_argument("--vllm-python", default=sys.executable,
                        help="the interpreter of an environment with vLLM for step 5 (default: this one)")
    parser.add_argument("--skip-vllm", action="store_true", help="skip step 5 (the vLLM engines)")
    parser.add_argument("--vllm-step", metavar="JSON", help=argparse.SUPPRESS)  # step 5's own process
    args = parser.parse_args(argv)
    if args.vllm_step:
        Path(args.vllm_step).write_text(json.dumps(vllm_check(), indent=2))
        return 0
    ready, report = cuda_ready()
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                     "cuda": report}
    if not ready:
        print(f"gpu_check: no usable CUDA GPU ({report}); nothing to check here, skipping.")
        figures["status"] = "skipped: no CUDA"
        if not args.skip_vllm:
            figures["vllm"] = run_vllm_step(args.vllm_python)
            print(f"gpu_check: vLLM step: {figures['vllm']['status']}")
        Path(args.out).write_text(json.dumps(figures, indent=2))
        return 0
    import torch
    import transformers

    figures.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, transformers=transformers.__version__)
    started = time.perf_counter()
    if not args.skip_tests:
        figures["backend_tests"] = run_backend_tests()
    if not args.skip_vllm:  # before this process touches CUDA: vLLM's engine wants the GPU to itself
        figures["vllm"] = run_vllm_step(args.vllm_python)
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
    vllm_status = figures.get("vllm", {"status": "skipped: --skip-vllm"})["status"]
    figures["status"] = "ok" if figures["memory"]["returned_to_zero"] and figures[
        "batched_greedy_equals_single"]["equal"] and figures.get("backend_tests", {"passed": True})["passed"] and (
        vllm_status == "ok" or vllm_status.startswith("skipped")) else "failed"
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0 if figures["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
