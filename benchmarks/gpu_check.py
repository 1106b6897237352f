"""A prepared check for a machine with one CUDA GPU and no internet (torch + transformers; vLLM optional).

    python benchmarks/gpu_check.py [--out gpu_check.json] [--skip-tests] [--skip-vllm] [--vllm-python PY]
    python benchmarks/gpu_check.py --weights DIR [--out gpu_check.json] [--dataset emoprefer] [--allow-cpu]

**With --weights DIR** (a folder of hub snapshots) it answers "how long will the grids take on this GPU,
and do both engines agree?": every local judge whose checkpoint is under DIR is checked (the others are
listed as absent) on each engine it supports -- transformers, then vLLM in the same process after CUDA was
initialised (the S1/S2 MLLM then S3/S4 text LLM sequence of a notebook kernel) -- for load time, pairs/s at
its YAML's batch on the first 32 v1 pairs with synthetic media of its YAML's clip length (``max_clip_s``),
peak GPU memory, mean output tokens and the share of identical verdicts between the engines; then the
GPU-hours of ``params/grid_paper.yaml`` and ``params/grid_2026.yaml`` at those rates. It writes the JSON
and a markdown summary beside it (``gpu_check.md``). Without CUDA it exits 0 saying what it skipped;
``--allow-cpu`` runs it on the CPU for tiny checkpoints (the tests), whose rates estimate nothing.

**Without --weights**, the random-weight smoke test below; its rates are NOT estimates (random weights
never emit EOS, so every request runs to its cap).

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
import dataclasses
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


# --------------------------------------------------------------------------- --weights: real checkpoints

GRIDS = ("grid_paper.yaml", "grid_2026.yaml")
CHECK_PAIRS = 32
CPU_MAX_TOKENS = 4
CPU_CLIP_S = 2.0
"""--allow-cpu: clip length and size of the synthetic media (the YAML's 30 s clips are a GPU's work)."""
"""--allow-cpu: each answer's cap (tiny random checkpoints never emit EOS); the rates then time nothing real."""
RANDOM_NOTE = ("random weights never emit EOS, so every request runs to its token cap: these rates are NOT estimates "
               "of a real run; pass --weights DIR for those")


def decoding_cap(spec, tokens: int) -> dict:
    """The YAML's length knob (max_new_tokens or max_tokens) set to ``tokens``."""
    key = "max_tokens" if "max_tokens" in spec.generation else "max_new_tokens"
    return {key: tokens}


def find_checkpoint(weights: Path, checkpoint: str) -> Path | None:
    """A hub id's snapshot under ``weights``: ``DIR/Org/Name``, ``DIR/Name``, or the HF cache layout
    ``DIR/models--Org--Name/snapshots/<rev>``; None when absent (a folder must hold config.json)."""
    org, _, name = checkpoint.rpartition("/")
    candidates = [weights / checkpoint, weights / name]
    candidates += sorted((weights / f"models--{org}--{name}" / "snapshots").glob("*"))
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def present_judges(weights: Path) -> tuple[dict, list[str]]:
    """Local judges whose checkpoint is under ``weights`` (name -> spec pointing there) and the absent ones."""
    from helpers.judges.registry import list_judges, load_spec

    present, absent = {}, []
    for name in list_judges():
        spec = load_spec(name)
        if spec.backend != "local":
            continue
        found = find_checkpoint(weights, spec.checkpoint)
        if found is None:
            absent.append(f"{name} ({spec.checkpoint})")
        else:
            present[name] = dataclasses.replace(spec, checkpoint=str(found))
    return present, absent


def check_requests(spec, pairs, media_dir: Path, size: tuple[int, int], seconds: float | None = None) -> list:
    """S1 requests of ``pairs`` (normal order) with synthetic media of the YAML's clip length (``seconds``
    instead where given), one clip per pair."""
    from tiny_models import write_mp4, write_wav

    from helpers import prompts
    from helpers.judges import fit
    from helpers.judges.base import Media, Request

    seconds = fit.clip_seconds(spec) if seconds is None else seconds
    system = prompts.prompt(spec.options["system_prompt"]) if spec.options.get("system_prompt") else None
    requests = []
    for i, row in enumerate(pairs.itertuples()):
        media = None
        if spec.input_type in ("video", "audiovideo"):
            clip = media_dir / f"{seconds:g}s_{i}.mp4"
            if not clip.is_file():
                write_mp4(clip, seconds=seconds, size=size, tone_hz=200 + 10 * i)
            media = Media(spec.input_type, video=clip)
        elif spec.input_type == "audio":
            clip = media_dir / f"{seconds:g}s_{i}.wav"
            if not clip.is_file():
                write_wav(clip, seconds=seconds, tone_hz=200 + 10 * i)
            media = Media("audio", audio=clip)
        requests.append(Request(f"S1|normal|r0|{row.name}", prompts.build_s1(row.a1, row.a2), media, system, 0))
    return requests


def time_engine(spec, engine: str, requests: list, cuda: bool) -> dict:
    """Load time, pairs/s at the YAML's batch, peak memory, mean output tokens and the verdicts of one engine."""
    import resource

    from helpers import prompts
    from helpers.judges.registry import make_backend
    from helpers.run.strategies import Pipeline

    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    backend = make_backend(spec, engine)
    pipeline = Pipeline(spec, lambda: backend, input_type=spec.input_type, dataset="check", progress=False)
    warm = requests[: max(1, min(spec.batch_size, len(requests)))]
    backend.generate(warm)  # the first call loads the model (both engines load lazily)
    loaded = time.perf_counter() - start
    responses: dict = {}
    start = time.perf_counter()
    pipeline.generate("mllm", "S1", requests, lambda batch, out: responses.update({r.key: r.text for r in out}))
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / GIB) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    tokens = output_tokens(spec, list(responses.values()))
    backend.close()
    return {"load_s": round(loaded, 2), "pairs": len(responses), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(responses) / seconds, 4) if seconds else None, "batch": spec.batch_size,
            "peak_gib": round(peak, 2), "peak_is": "GPU (torch max_memory_allocated)" if cuda else "host RSS",
            "mean_output_tokens": tokens, "oom_backoffs": len(pipeline.backoffs),
            "verdicts": {k: prompts.parse_label(t)[0] for k, t in responses.items()}}


def output_tokens(spec, texts: list[str]) -> float | None:
    """Mean tokens of the answers, counted by the checkpoint's own tokenizer."""
    from transformers import AutoTokenizer

    if not texts:
        return None
    tokenizer = AutoTokenizer.from_pretrained(spec.checkpoint, local_files_only=True)
    return round(sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts), 1)


def grid_requests(grid_file: Path, pairs_n: int) -> list[dict]:
    """Model requests of every cell of a grid: pairs x orders x rounds x the calls its strategy makes
    (S1 one; S2 a description and a verdict; S3 a description and the text LLM's verdict; S4 a description,
    the text LLM's reasoning and extraction), per judge that makes them."""
    import yaml

    grid = yaml.safe_load(grid_file.read_text())
    fixed = grid.get("parameters") or {}
    orders = 2 if fixed.get("order", "both") == "both" else 1
    rows = orders * int(fixed.get("rounds", 2)) * pairs_n
    calls = {"S1": {"judge": 1}, "S2": {"judge": 2}, "S3": {"judge": 1, "llm": 1}, "S4": {"judge": 1, "llm": 2}}
    out = []
    for model in grid["matrix"]["model"]:
        for strategy in grid["matrix"]["strategy"]:
            for role, n in calls[strategy].items():
                out.append({"cell": f"{model}__{strategy}", "judge": model if role == "judge" else fixed["judge_llm"],
                            "requests": n * rows})
    return out


def gpu_hours(rates: dict, pairs_n: int) -> dict:
    """GPU-hours of each grid at the measured rates (each judge on the engine its YAML names, else the other
    one measured); cells of judges not measured are listed, not guessed."""
    from helpers.judges.registry import load_spec

    out = {}
    for name in GRIDS:
        seconds, missing = 0.0, set()
        for part in grid_requests(ROOT / "params" / name, pairs_n):
            judge_rates = rates.get(part["judge"], {})
            own = load_spec(part["judge"]).options.get("engine", "transformers")
            rate = judge_rates.get(own) or next(iter(judge_rates.values()), None)
            if not rate:
                missing.add(part["judge"])
                continue
            seconds += part["requests"] / rate
        out[name] = {"gpu_hours": round(seconds / 3600, 3) if not missing else None,
                     "gpu_hours_measured_judges": round(seconds / 3600, 3), "judges_not_measured": sorted(missing),
                     "pairs": pairs_n, "note": "S1 request rates applied to every call (describe and S4 steps "
                                               "write longer answers: a lower bound)"}
    return out


def weights_check(weights: Path, figures: dict, cuda: bool, dataset: str, data_dir: str | None) -> dict:
    """The --weights mode: every present judge on every engine it supports, then the grids' GPU-hours."""
    from helpers.data import load_pairs
    from helpers.judges.registry import vllm_available

    present, absent = present_judges(weights)
    figures.update(weights=str(weights), present=sorted(present), absent=absent)
    all_pairs = load_pairs(dataset, "normal", data_dir)
    pairs = all_pairs.head(CHECK_PAIRS)
    engines = ["transformers"] + (["vllm"] if cuda and vllm_available() else [])
    figures["engines"] = engines
    if "vllm" not in engines:
        figures["vllm_after_transformers"] = "skipped: " + ("vLLM is not importable" if cuda else "no CUDA")
    judges, rates = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in present.items():
            requests = check_requests(spec, pairs, Path(tmp), (720, 1280) if cuda else (56, 56),
                                      None if cuda else CPU_CLIP_S)
            if not cuda:  # the CPU test mode: tiny checkpoints, answers capped (random weights never stop)
                spec = dataclasses.replace(spec, options={**spec.options, "device": "cpu"},
                                           generation={**spec.generation, **decoding_cap(spec, CPU_MAX_TOKENS)})
            result = {}
            for engine in engines:  # transformers first, then vLLM in this same process (CUDA already initialised)
                try:
                    result[engine] = time_engine(spec, engine, requests, cuda)
                except Exception as exc:  # noqa: BLE001 -- one judge's failure is a finding, not the end of the check
                    result[engine] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            measured = {e: r["pairs_per_s"] for e, r in result.items() if r.get("pairs_per_s")}
            rates[name] = measured
            if len(measured) == 2:
                a, b = result["transformers"]["verdicts"], result["vllm"]["verdicts"]
                result["identical_verdicts_pct"] = round(100 * sum(a[k] == b.get(k) for k in a) / len(a), 1)
                figures["vllm_after_transformers"] = "ok"
            for engine_result in result.values():
                if isinstance(engine_result, dict):
                    engine_result.pop("verdicts", None)
            judges[name] = result
    figures["judges"] = judges
    figures["gpu_hours"] = gpu_hours(rates, len(all_pairs))
    if not cuda:
        figures["cpu_test_mode"] = (f"no CUDA (--allow-cpu): tiny checkpoints on the CPU, answers capped at "
                                    f"{CPU_MAX_TOKENS} tokens, {CPU_CLIP_S:g} s clips of 56x56 px; the rates and GPU-hours exercise the code, they "
                                    "estimate nothing")
    figures["status"] = "ok" if judges and all("error" not in r for j in judges.values() for r in j.values()
                                               if isinstance(r, dict)) else ("failed" if judges else "no judge present")
    return figures


def summary_markdown(figures: dict) -> str:
    """The check as markdown the report can embed."""
    lines = [f"**GPU check** ({figures.get('date')}, {figures.get('gpu', 'no GPU: CPU test mode')}): "
             f"status {figures.get('status')}."]
    if "judges" not in figures:
        lines.append(f"\n{figures.get('note', '')}")
        return "\n".join(lines) + "\n"
    lines += ["", "| judge | engine | load s | pairs/s | batch | peak GiB | mean output tokens |",
              "|---|---|---|---|---|---|---|"]
    for name, result in figures["judges"].items():
        for engine, r in result.items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                lines.append(f"| {name} | {engine} | error: {r['error'][:80]} | | | | |")
            else:
                lines.append(f"| {name} | {engine} | {r['load_s']} | {r['pairs_per_s']} | {r['batch']} | "
                             f"{r['peak_gib']} ({r['peak_is']}) | {r['mean_output_tokens']} |")
        if "identical_verdicts_pct" in result:
            lines.append(f"| {name} | both | identical verdicts: {result['identical_verdicts_pct']}% | | | | |")
    lines += ["", f"Absent (no checkpoint under {figures['weights']}): {', '.join(figures['absent']) or 'none'}.", ""]
    for grid, est in figures["gpu_hours"].items():
        hours = est["gpu_hours"] if est["gpu_hours"] is not None else (
            f"not estimated ({', '.join(est['judges_not_measured'])} not measured; measured judges: "
            f"{est['gpu_hours_measured_judges']} h)")
        lines.append(f"- {grid}: {hours} GPU-hours over {est['pairs']} pairs ({est['note']}).")
    lines.append(f"- transformers then vLLM in one process: {figures.get('vllm_after_transformers')}.")
    return "\n".join(lines) + "\n"


def write_outputs(figures: dict, out: Path) -> None:
    out.write_text(json.dumps(figures, indent=2))
    out.with_suffix(".md").write_text(summary_markdown(figures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_check.json"))
    parser.add_argument("--skip-tests", action="store_true", help="skip step 1 (the pytest run)")
    parser.add_argument("--vllm-python", default=sys.executable,
                        help="the interpreter of an environment with vLLM for step 5 (default: this one)")
    parser.add_argument("--skip-vllm", action="store_true", help="skip step 5 (the vLLM engines)")
    parser.add_argument("--vllm-step", metavar="JSON", help=argparse.SUPPRESS)  # step 5's own process
    parser.add_argument("--weights", type=Path, metavar="DIR",
                        help="a folder of hub snapshots (Org/Name, Name or the HF cache's models--Org--Name): every "
                             "judge whose checkpoint is there is timed on each engine it supports (load time, pairs/s "
                             f"at its YAML batch on {CHECK_PAIRS} real v1 pairs with synthetic media of its YAML's clip "
                             "length, peak memory, mean output tokens, identical verdicts between engines), then the "
                             "GPU-hours of params/grid_paper.yaml and grid_2026.yaml at those rates; writes --out and "
                             "a markdown summary beside it. Without it: the random-weight smoke test (its rates are "
                             "not estimates)")
    parser.add_argument("--dataset", default="emoprefer", help="the pairs timed with --weights (default emoprefer)")
    parser.add_argument("--data-dir", help="folder of the dataset CSVs (default EMOPREFER_DATA)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="with --weights and no CUDA: run on the CPU anyway (a test mode for tiny checkpoints; "
                             "its rates say nothing about a GPU)")
    args = parser.parse_args(argv)
    if args.vllm_step:
        Path(args.vllm_step).write_text(json.dumps(vllm_check(), indent=2))
        return 0
    ready, report = cuda_ready()
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                     "cuda": report}
    if args.weights is not None:
        if not args.weights.is_dir():
            print(f"gpu_check: --weights {args.weights} is not a folder", file=sys.stderr)
            return 2
        if not ready and not args.allow_cpu:
            print(f"gpu_check: no usable CUDA GPU ({report}); skipped the --weights check (every judge, both "
                  "engines, the GPU-hours estimate). --allow-cpu runs it on the CPU (tiny checkpoints only).")
            figures["status"] = "skipped: no CUDA (--weights)"
            write_outputs(figures, Path(args.out))
            return 0
        if ready:
            import torch

            figures["gpu"] = torch.cuda.get_device_name(0)
        figures = weights_check(args.weights, figures, ready, args.dataset, args.data_dir)
        write_outputs(figures, Path(args.out))
        print(summary_markdown(figures))
        return 0 if figures["status"] in ("ok", "no judge present") else 1
    figures["note"] = RANDOM_NOTE
    if not ready:
        print(f"gpu_check: no usable CUDA GPU ({report}); nothing to check here, skipping.")
        figures["status"] = "skipped: no CUDA"
        if not args.skip_vllm:
            figures["vllm"] = run_vllm_step(args.vllm_python)
            print(f"gpu_check: vLLM step: {figures['vllm']['status']}")
        write_outputs(figures, Path(args.out))
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
    write_outputs(figures, Path(args.out))
    print(json.dumps(figures, indent=2))
    print(f"gpu_check: {RANDOM_NOTE}")
    return 0 if figures["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
