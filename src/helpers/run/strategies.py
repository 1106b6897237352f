"""The paper's four judging strategies, built on the ``Request``/``Backend`` contract.

S1  the MLLM judges the pair from the media.
S2  the MLLM describes the media, then judges the pair against its own description (+ media).
S3  the same description, judged by an external text LLM (no media).
S4  the text LLM first reasons, then extracts a label from its reasoning.

What is shared, and why: a description depends on the video, the judge, the input type and
the round's seed, not on the pair's order or the strategy that asked for it, so it is
generated once per (judge, input type, sample, round) and reused by S2, S3, S4 and both
orders (the paper's code re-describes for the reversed order). Reasoning depends on the order
(the texts swap places), so it is generated once per (judge, LLM, sample, round, order).
Every request of round r carries seed ``seed + r``: a round is a fresh generation.

A cached step is reused only when everything that determines its text is the same, not just
the judge's name: each key ends with ``id=<digest>`` of the checkpoint (and revision), the
engine that ran it (``engines``), the generation settings and the hashes of the prompt texts sent (for reasoning also the text LLM's
and the description's identity). Editing a judge's YAML or a prompt therefore regenerates the
texts; the old entries stay in ``steps.jsonl`` (never deleted) and are simply not matched.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm import tqdm

from helpers import prompts
from helpers.data import media_paths
from helpers.digest import STEP_ID_LEN, sha256_hex
from helpers.judges.base import (
    STRATEGIES,
    Backend,
    BackendError,
    JudgeSpec,
    Media,
    Request,
    Response,
    Strategy,
    is_out_of_memory,
    strategy_record,
)
from helpers.judges.media import MediaError
from helpers.judges.registry import backend_info
from helpers.run.store import MEDIA_ERROR, now, prediction_row, row_key, truncate_raw


@dataclass(frozen=True)
class Item:
    """One pair in one order and round: the unit that becomes one predictions row."""

    name: str
    media_name: str
    order: str
    round: int
    a1: str
    a2: str
    gt: str | None = None


def describe_key(judge: str, input_type: str, media_name: str, rnd: int, seed: int, identity: str,
                 order: str | None = None) -> str:
    """A description's identity; ``order`` only when descriptions are made per order."""
    where = media_name if order is None else f"{media_name}|{order}"
    return f"describe|{judge}|{input_type}|{where}|r{rnd}|seed={seed}|id={identity}"


ORDER_SEED_OFFSET = {"normal": 0, "reverse": 1_000_003}
"""Added to a per-order description's seed: the reversed order's description is a fresh sample
(same prompt and media, so the same seed would repeat the normal order's text)."""


def reason_key(judge: str, input_type: str, llm: str, dataset: str, name: str, order: str, rnd: int,
               seed: int, identity: str) -> str:
    return f"S4_reason|{judge}|{input_type}|{llm}|{dataset}|{name}|{order}|r{rnd}|seed={seed}|id={identity}"


def model_identity(spec: JudgeSpec, engine: str | None = None) -> dict:
    """What of a judge's YAML shapes its generated text: the weights, how it decodes and the
    engine that decodes (transformers and vLLM give different texts, and different random
    streams when sampling). (The name is left out on purpose: it is a label, and a label can
    point at new weights.)"""
    return {"checkpoint": spec.checkpoint, "revision": spec.options.get("revision"),
            "generation": spec.generation, "engine": engine}


def step_identity(**parts: object) -> str:
    """A short, stable digest of ``parts`` (JSON with sorted keys): equal digests, same inputs."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return sha256_hex(text, STEP_ID_LEN)


def extract_prompt(reason: str) -> str:
    """S4 step 2 as the official code builds it: the reasoning went through the text LLM's
    post-processing (``func_postprocess_qwen``: a leading ``Output:``-like word dropped, newlines
    removed, not replaced) before step 2 cleaned it and filled the extraction prompt."""
    return prompts.build_extract(prompts.strip_text_llm_prefix(reason))


def derangement(names: list[str], seed: int) -> dict[str, str]:
    """Each name -> another name, a permutation without fixed points drawn with ``seed`` (Sattolo's
    algorithm: one random cycle through all names); with fewer than two names there is none."""
    import random

    if len(names) < 2:
        raise ValueError(f"media='mismatched' needs at least two different clips, got {len(names)}")
    order = list(names)
    rng = random.Random(seed)
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never stays in place
        order[i], order[j] = order[j], order[i]
    return dict(zip(names, order, strict=True))


def media_files(request: Request) -> list[str]:
    """The media files a request sends (their paths as text)."""
    media = request.media
    return [] if media is None else [str(p) for p in (media.video, media.audio) if p is not None]


def by_video(items: Iterable[Item]) -> list[Item]:
    """Requests that share a video next to each other, so prefix/encoder caches can help."""
    return sorted(items, key=lambda it: (it.media_name, it.round, it.order, it.name))


class Pipeline:
    """Runs strategies for one judge (and one text LLM) and counts model calls per step.

    Backends are created on first use through the given factories, and the MLLM is released
    before the text LLM is loaded, so one GPU holds one 7B model at a time. ``steps`` is the
    shared cache of descriptions/reasoning by key (pre-filled from the store on resume);
    ``on_steps`` persists newly generated ones. ``backend_info`` holds, per role, the
    description of the backend that served it (for the run manifest).
    """

    def __init__(
        self,
        judge: JudgeSpec,
        mllm: Callable[[], Backend],
        *,
        input_type: str,
        dataset: str,
        media_dir=None,
        seed: int = 0,
        llm_spec: JudgeSpec | None = None,
        llm: Callable[[], Backend] | None = None,
        steps: dict[str, str] | None = None,
        on_steps: Callable[[list[dict]], object] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        share_descriptions: bool = True,
        engines: dict[str, str | None] | None = None,
        media: str = "real",
        media_map: dict[str, str] | None = None,
    ):
        self.judge, self.llm_spec = judge, llm_spec
        self._factories = {"mllm": mllm, "llm": llm}
        self._backends: dict[str, Backend] = {}
        self.input_type, self.dataset, self.media_dir, self.seed = input_type, dataset, media_dir, seed
        self.steps = steps if steps is not None else {}
        self.on_steps = on_steps or (lambda rows: None)
        self.on_sending: Callable[[str, int], object] = lambda step, n: None  # before a batch goes out
        self.batch_size, self.progress = batch_size, progress
        self.share_descriptions = bool(share_descriptions)  # resolved by the run (decoding.resolve_sharing)
        self.calls: Counter[str] = Counter()
        self.media_setting, self.media_map = media, dict(media_map or {})  # helpers.run.engine.MEDIA_SETTINGS
        system_key = judge.options.get("system_prompt")
        self.system = prompts.prompt(system_key) if system_key else None
        self.describe_prompt = prompts.build_describe(judge.options.get("describe_prompt", "describe_input"))
        self.prompt_hashes = {"describe": prompts.text_hash(self.describe_prompt),
                              "system": prompts.text_hash(self.system or judge.options.get("system"))}
        self.reason_hashes = {"S4_reason": prompts.text_hash(prompts.prompt("S4_reason"))}
        engines = engines or {}
        shown = {} if media == "real" else {"media": media}  # a description of no clip, or of another pair's
        self.describe_id = step_identity(step="describe", **model_identity(judge, engines.get("mllm")),
                                         prompts=self.prompt_hashes, **shown)
        self.reason_id = None if llm_spec is None else step_identity(
            step="S4_reason", description=self.describe_id, **model_identity(llm_spec, engines.get("llm")),
            prompts=self.reason_hashes)
        self.backend_info: dict[str, dict] = {}
        self.backoffs: list[dict] = []  # each out-of-memory halving: step, batch size before/after, first key
        self.media_errors: dict[str, str] = {}  # media file -> why it cannot be decoded as the judge needs
        self._limit: dict[str, int] = {}  # per role: the batch size an out-of-memory error halved it to

    # ------------------------------------------------------------------ backends

    def backend(self, role: str) -> Backend:
        """The MLLM or the text LLM, loaded lazily; loading one releases the other."""
        if role not in self._backends:
            factory = self._factories[role]
            if factory is None:
                raise ValueError(f"strategy needs a text LLM but none was given (judge {self.judge.name!r})")
            for other in list(self._backends):
                self._backends.pop(other).close()
            self._backends[role] = factory()
        return self._backends[role]

    def close(self) -> None:
        for role in list(self._backends):
            self._backends.pop(role).close()

    # ------------------------------------------------------------------ requests

    def media(self, media_name: str) -> Media | None:
        """The media a request about ``media_name``'s pair shows: its own clip, none, or under
        ``mismatched`` the clip the derangement gives it."""
        if self.input_type == "text" or self.media_setting == "none":
            return None
        found = media_paths(self.media_map.get(media_name, media_name), self.media_dir)
        if self.input_type == "audio":
            return Media("audio", audio=found.audio)
        return Media(self.input_type, video=found.video)

    def mllm_request(self, key: str, text: str, item: Item, offset: int = 0) -> Request:
        return Request(key, text, self.media(item.media_name), self.system, self.seed + item.round + offset)

    def describe_seed_offset(self, item: Item) -> int:
        return 0 if self.share_descriptions else ORDER_SEED_OFFSET[item.order]

    def llm_request(self, key: str, text: str, item: Item) -> Request:
        return Request(key, text, None, None, self.seed + item.round)

    def generate(self, role: str, step: str, requests: list[Request],
                 on_batch: Callable[[list[Request], list[Response]], None]) -> None:
        """Send ``requests`` in batches; ``on_batch`` persists each batch before the next. A batch
        that runs out of GPU memory is halved and retried (down to one request; :meth:`_send`); a
        request whose media cannot be decoded is left out and its file recorded in
        :attr:`media_errors`, so its pair becomes a ``media_error`` row instead of stopping the run."""
        requests = [r for r in requests if self.media_error(r) is None]
        if not requests:
            return
        backend = self.backend(role)
        size = backend.requests_per_call(self.batch_size)  # vLLM gets large chunks; each is stored on return
        bar = tqdm(total=len(requests), desc=f"{self.judge.name} {step}", unit="req", disable=not self.progress)
        start = 0
        while start < len(requests):
            batch = requests[start:start + min(size, self._limit.get(role, size))]
            start += len(batch)
            sent = [r for r in batch if self.media_error(r) is None]  # another request may have found a file bad
            self.on_sending(step, len(sent))  # recorded first: a kill mid-batch still counts these calls
            responses = self._send(backend, role, step, sent)
            self.backend_info[role] = backend_info(backend)  # complete once loaded (lazy loaders fill it late)
            done = [r for r in sent if self.media_error(r) is None]
            if [r.key for r in responses] != [r.key for r in done]:
                raise RuntimeError(f"backend {type(backend).__name__} returned responses out of order or missing")
            self.calls[step] += len(done)
            on_batch(done, responses)
            bar.update(len(batch))
        bar.close()

    def media_error(self, request: Request) -> str | None:
        """Why this request's media cannot be decoded (None when they can, or have not failed yet)."""
        for path in media_files(request):
            if path in self.media_errors:
                return self.media_errors[path]
        return None

    def _send(self, backend: Backend, role: str, step: str, batch: list[Request]) -> list[Response]:
        """``backend.generate(batch)`` for the requests whose media decode; on CUDA out of memory the
        batch is halved (each halving recorded in :attr:`backoffs`) down to one request, which then
        fails naming its pair."""
        if not batch:
            return []
        try:
            return backend.generate(batch)
        except MediaError as exc:
            bad = [r for r in batch if any(path in str(exc) for path in media_files(r))]
            if not bad and len(batch) > 1:  # the message names no file of ours: find the request by halving
                half = len(batch) // 2
                return self._send(backend, role, step, batch[:half]) + self._send(backend, role, step, batch[half:])
            for request in bad or batch:
                for path in media_files(request):
                    if path in str(exc) or not bad:
                        self.media_errors[path] = f"{type(exc).__name__}: {exc}"
            return self._send(backend, role, step, [r for r in batch if self.media_error(r) is None])
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            backend.after_out_of_memory()
            if len(batch) == 1:
                raise BackendError(f"judge {self.judge.name!r}: out of GPU memory at step {step} on request "
                                   f"{batch[0].key!r} alone (batch size 1, after halving from the configured size; "
                                   f"see the manifest's oom_backoffs): {exc}") from exc
            half = len(batch) // 2
            self._limit[role] = min(self._limit.get(role, half), half)
            self.backoffs.append({"step": step, "role": role, "batch": len(batch), "retry_as": half,
                                  "first_key": batch[0].key, "error": str(exc)[:300], "at": now()})
            sent: list[Response] = []
            start = 0
            while start < len(batch):  # in pieces of the smallest size reached so far
                piece = batch[start:start + min(half, self._limit[role])]
                start += len(piece)
                sent += self._send(backend, role, step, piece)
            return sent

    # ------------------------------------------------------------------ shared steps

    def describe_key(self, item: Item) -> str:
        return describe_key(self.judge.name, self.input_type, item.media_name, item.round, self.seed,
                            self.describe_id, order=None if self.share_descriptions else item.order)

    def reason_key(self, item: Item) -> str:
        return reason_key(self.judge.name, self.input_type, self.llm_spec.name, self.dataset, item.name,
                          item.order, item.round, self.seed, self.reason_id)

    def ensure_descriptions(self, items: list[Item]) -> None:
        """One description per (sample, round) that is not cached yet."""
        wanted: dict[str, Item] = {}
        for item in by_video(items):
            key = self.describe_key(item)
            if key not in self.steps and key not in wanted:
                wanted[key] = item
        requests = [self.mllm_request(key, self.describe_prompt, item, self.describe_seed_offset(item))
                    for key, item in wanted.items()]

        def keep(batch: list[Request], responses: list[Response]) -> None:
            records = []
            for response in responses:
                item = wanted[response.key]
                records.append(self._step_record("describe", response, item, llm=None,
                                                 order=None if self.share_descriptions else item.order))
                self.steps[response.key] = records[-1]["text"]  # as stored, so a resumed run reads the same
            self.on_steps(records)

        self.generate("mllm", "describe", requests, keep)

    def ensure_reasons(self, items: list[Item]) -> None:
        """S4 step 1 for every (sample, round, order) not cached yet."""
        wanted = {self.reason_key(it): it for it in by_video(items) if self.reason_key(it) not in self.steps}
        requests = [
            self.llm_request(key, prompts.build_reason(self.steps[self.describe_key(it)], it.a1, it.a2), it)
            for key, it in wanted.items()
        ]

        def keep(batch: list[Request], responses: list[Response]) -> None:
            records = []
            for response in responses:
                records.append(self._step_record("S4_reason", response, wanted[response.key],
                                                 order=wanted[response.key].order, llm=self.llm_spec.name))
                self.steps[response.key] = records[-1]["text"]  # as stored, so a resumed run reads the same
            self.on_steps(records)

        self.generate("llm", "S4_reason", requests, keep)

    def _step_record(self, step: str, response: Response, item: Item, order: str | None, llm: str | None) -> dict:
        """The stored step; its text cut to ``RAW_MAX_BYTES`` like an answer (``raw_truncated``), and
        the next step reads the text as stored, fresh or resumed."""
        reason = step == "S4_reason"
        text, cut = truncate_raw(response.text)
        return {
            "key": response.key, "step": step, "judge": self.judge.name, "llm": llm,
            "identity": self.reason_id if reason else self.describe_id, "checkpoint": self.judge.checkpoint,
            "llm_checkpoint": self.llm_spec.checkpoint if reason else None,
            "prompt_hashes": {**self.prompt_hashes, **(self.reason_hashes if reason else {})},
            "input_type": self.input_type, "dataset": self.dataset,
            "name": item.media_name if step == "describe" else item.name,
            "round": item.round, "order": order,
            "seed": self.seed + item.round + (self.describe_seed_offset(item) if step == "describe" else 0),
            "text": text, "raw_truncated": cut, "latency_s": response.latency_s, "created_at": now(),
        }

    # ------------------------------------------------------------------ strategies

    def predict(self, strategy: str, items: list[Item], on_rows: Callable[[list[dict]], object],
                run_id: str = "", on_steps: Callable[[list[dict]], object] | None = None,
                on_sending: Callable[[str, int], object] | None = None) -> None:
        """Judge ``items`` with ``strategy``; rows (of run folder ``run_id``) reach ``on_rows``
        one batch at a time, new descriptions/reasoning ``on_steps`` (default: the pipeline's),
        and ``on_sending(step, n)`` hears of each batch of ``n`` requests before it is sent.
        ``backend_info`` afterwards names the backends this strategy used (reused steps name
        theirs in their own run)."""
        self.backend_info = {}
        if on_steps is not None:
            self.on_steps = on_steps
        if on_sending is not None:
            self.on_sending = on_sending
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        record = strategy_record(strategy)
        items = by_video(items)
        if not items:
            return
        if record.describes:
            self.ensure_descriptions(items)
            items = self._emit_media_errors(record, items, on_rows, run_id)
        if record.reasons:
            self.ensure_reasons(items)

        def key(it: Item) -> str:
            return row_key(strategy, it.order, it.round, it.name)

        build = {
            "S1": lambda it: self.mllm_request(key(it), prompts.build_s1(it.a1, it.a2), it),
            "S2": lambda it: self.mllm_request(key(it), prompts.build_judge(self.desc(it), it.a1, it.a2), it),
            "S3": lambda it: self.llm_request(key(it), prompts.build_judge(self.desc(it), it.a1, it.a2), it),
            "S4": lambda it: self.llm_request(key(it), extract_prompt(self.steps[self.reason_key(it)]), it),
        }[strategy]
        by_key = {key(it): it for it in items}

        def emit(batch: list[Request], responses: list[Response]) -> None:
            on_rows([self.row(record, by_key[r.key], r, run_id) for r in responses])

        self.generate(record.verdict_role, record.verdict_step, [build(it) for it in items], emit)
        self._emit_media_errors(record, items, on_rows, run_id)

    def item_media_error(self, item: Item) -> str | None:
        """Why the media of this item's sample cannot be decoded (None when they can)."""
        media = self.media(item.media_name)
        return None if media is None else self.media_error(Request("", "", media))

    def _emit_media_errors(self, record: Strategy, items: list[Item], on_rows: Callable[[list[dict]], object],
                           run_id: str) -> list[Item]:
        """Store a ``media_error`` row for each item whose media failed; return the others."""
        failed = [(it, why) for it in items if (why := self.item_media_error(it)) is not None]
        if failed:
            on_rows([self.error_row(record, it, why, run_id) for it, why in failed])
        return [it for it in items if self.item_media_error(it) is None]

    def error_row(self, record: Strategy, item: Item, reason: str, run_id: str = "") -> dict:
        """The stored row of a pair whose media cannot be decoded: no verdict, the reason kept."""
        return prediction_row(
            judge=self.judge.name, strategy=record.name, input_type=self.input_type, order=item.order,
            round=item.round, name=item.name, gt=item.gt, pred=None, parse_rule=None, raw=None, latency_s=None,
            created_at=now(), run_id=run_id, dataset=self.dataset, llm=self.llm_spec.name if record.uses_llm else None,
            media_name=item.media_name, seed=self.seed + item.round, status=MEDIA_ERROR, error=reason,
            media=self.media_setting)

    def desc(self, item: Item) -> str:
        return self.steps[self.describe_key(item)]

    def row(self, record: Strategy, item: Item, response: Response, run_id: str = "") -> dict:
        """The stored row of one verdict."""
        label, rule = prompts.parse_label(response.text, text_llm=record.uses_llm)
        steps = {}
        if record.describes:
            steps["describe"] = self.describe_key(item)
        if record.reasons:
            steps["S4_reason"] = self.reason_key(item)
        return prediction_row(
            judge=self.judge.name, strategy=record.name, input_type=self.input_type, order=item.order,
            round=item.round, name=item.name, gt=item.gt, pred=label, parse_rule=rule, raw=response.text,
            latency_s=response.latency_s, created_at=now(), run_id=run_id, dataset=self.dataset,
            llm=self.llm_spec.name if record.uses_llm else None, media_name=item.media_name,
            seed=self.seed + item.round, steps=steps, media=self.media_setting)
