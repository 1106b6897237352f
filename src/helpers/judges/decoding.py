"""A judge's decoding protocol, stated once in its YAML and translated for every backend.

Why this module exists: transformers fills every knob a caller leaves out from the checkpoint's
``generation_config.json`` (and, where that is silent, from its global defaults: 20 new tokens,
greedy), while vLLM ignores the checkpoint once ``SamplingParams`` are passed and applies its
own defaults (temperature 1.0, 16 tokens). The same YAML therefore decoded differently on the
two backends. Here the YAML's ``generation:`` is completed with explicit values
(:func:`complete`) and :func:`translate` turns that one dict into each backend's spelling, so
neither library's defaults ever decide what a judge sends.

Keys: ``max_new_tokens`` (``max_tokens`` accepted), ``do_sample``, ``temperature``, ``top_p``,
``top_k`` (0 = all tokens, vLLM's meaning; transformers' own default would be 50) and
``repetition_penalty``.
"""

from __future__ import annotations

from typing import Any

from helpers.judges.base import BackendError, JudgeSpec

KNOBS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
ALIASES = {"max_tokens": "max_new_tokens"}
NEUTRAL = {"top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
"""What an unstated knob means on every backend: no nucleus cut, no top-k cut, no penalty."""
GREEDY_BELOW = 1e-5
"""Temperatures below this are argmax decoding: transformers' softmax at such temperatures is
one-hot, and vLLM calls a temperature below its ``_SAMPLING_EPS`` (1e-5) greedy -- but only one
that reaches it: see :data:`VLLM_MIN_TEMPERATURE`."""
VLLM_MIN_TEMPERATURE = 1e-2
"""vLLM 0.33's ``SamplingParams.__post_init__`` raises any temperature in (0, ``_MAX_TEMP`` = 1e-2)
to 1e-2 before its greedy test, so a raw 1e-6 would *sample* at 0.01 there. The translation
therefore sends 0 (greedy) for temperatures below :data:`GREEDY_BELOW` and refuses those in
[1e-5, 1e-2), which transformers samples at face value and vLLM at 0.01: no YAML temperature
decodes differently on the two engines without a word."""
PAPER_TEXT_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05, "max_tokens": 512}
"""The paper's vLLM settings for the S3/S4 text LLM (EmoPrefer utils/qwen25.py)."""
MLLM_MAX_TOKENS = 1024
"""Length for a code-built multimodal spec that states none (Omni's thinker default)."""
TEXT_FAMILIES = ("text", "qwen25")
BACKENDS = ("transformers", "vllm")


class DecodingError(BackendError):
    """A judge's generation settings are unknown, contradictory or incomplete."""


def normalise(generation: dict | None, who: str = "judge") -> dict:
    """The stated settings under canonical names, checked; ``do_sample`` derived from a stated
    temperature (positive = sampling) where not given."""
    settings = dict(generation or {})
    for alias, name in ALIASES.items():
        if alias in settings:
            if name in settings and settings[name] != settings[alias]:
                raise DecodingError(f"{who}: both {alias}={settings[alias]} and {name}={settings[name]} are set")
            settings[name] = settings.pop(alias)
    unknown = sorted(set(settings) - set(KNOBS))
    if unknown:
        raise DecodingError(f"{who}: unknown generation settings {unknown} (known: {', '.join(KNOBS)})")
    if "max_new_tokens" in settings and not (isinstance(settings["max_new_tokens"], int)
                                             and settings["max_new_tokens"] >= 1):
        raise DecodingError(f"{who}: max_new_tokens must be a positive integer, got {settings['max_new_tokens']!r}")
    if "temperature" in settings:
        if settings["temperature"] < 0:
            raise DecodingError(f"{who}: temperature must be >= 0, got {settings['temperature']}")
        if settings.get("do_sample") is True and settings["temperature"] == 0:
            raise DecodingError(f"{who}: do_sample is true but temperature is 0; say do_sample: false for greedy")
        if settings.get("do_sample", True) and GREEDY_BELOW <= settings["temperature"] < VLLM_MIN_TEMPERATURE:
            raise DecodingError(
                f"{who}: temperature {settings['temperature']:g} samples at face value in transformers but vLLM "
                f"raises every temperature below {VLLM_MIN_TEMPERATURE:g} to {VLLM_MIN_TEMPERATURE:g}, so the two "
                f"engines would decode differently; state a temperature below {GREEDY_BELOW:g} (argmax on both), "
                f"0 with do_sample: false (greedy), or at least {VLLM_MIN_TEMPERATURE:g}")
        settings.setdefault("do_sample", settings["temperature"] > 0)
    return settings


def complete(generation: dict | None, defaults: dict | None = None, who: str = "judge") -> dict:
    """Every knob with an explicit value: the stated ones over ``defaults``, then greedy and
    :data:`NEUTRAL` for the rest (``max_new_tokens`` stays absent when nobody states it)."""
    settings = {**normalise(defaults, who), **normalise(generation, who)}
    if "do_sample" not in settings:
        settings["do_sample"] = False
    if settings["do_sample"]:
        settings.setdefault("temperature", 1.0)
    for knob, value in NEUTRAL.items():
        settings.setdefault(knob, value)
    return settings


def translate(generation: dict | None, backend: str, who: str = "judge") -> dict:
    """The backend's keyword arguments for these settings (``generate`` kwargs for transformers,
    ``SamplingParams`` kwargs for vLLM); only what is stated, except that vLLM always gets a
    temperature (0 for greedy) so that its own 1.0 never applies."""
    if backend not in BACKENDS:
        raise DecodingError(f"{who}: backend must be one of {BACKENDS}, got {backend!r}")
    settings = normalise(generation, who)
    sampling = settings.get("do_sample")
    if backend == "transformers":
        if sampling is False:
            for knob in ("temperature", "top_p", "top_k"):
                settings.pop(knob, None)
        return settings
    out: dict[str, Any] = {}
    if "max_new_tokens" in settings:
        out["max_tokens"] = settings["max_new_tokens"]
    temperature = settings.get("temperature", 1.0)
    out["temperature"] = 0.0 if not sampling or temperature < GREEDY_BELOW else temperature
    if "repetition_penalty" in settings:
        out["repetition_penalty"] = settings["repetition_penalty"]
    if out["temperature"] == 0.0:  # greedy: vLLM resets top_p/top_k itself; send none it would change
        return out
    if "top_p" in settings:
        out["top_p"] = settings["top_p"]
    if settings.get("top_k"):  # 0 = all tokens: vLLM's own value (older releases spell it -1)
        out["top_k"] = settings["top_k"]
    return out


def defaults_for(spec: JudgeSpec) -> dict:
    """What a spec that states nothing decodes with: the paper's sampling for the text LLM,
    greedy with :data:`MLLM_MAX_TOKENS` for multimodal judges (code-built specs only; every
    shipped YAML states its protocol)."""
    if spec.family in TEXT_FAMILIES:
        return dict(PAPER_TEXT_SAMPLING)
    return {} if spec.backend in ("openai", "cpu") else {"max_new_tokens": MLLM_MAX_TOKENS}


def protocol(spec: JudgeSpec) -> dict:
    """The complete decoding protocol a local judge runs with, on any backend."""
    return complete(spec.generation, defaults_for(spec), who=f"judge {spec.name!r}")


def describe(settings: dict, backend: str = "local") -> str:
    """Decoding settings in one line, as the protocol card and a grid's dry run show them."""
    if backend == "openai" and "temperature" not in settings:
        return "vendor defaults"
    rep, length = settings.get("repetition_penalty", 1.0), settings.get("max_new_tokens", "?")
    if not settings.get("do_sample"):
        return f"greedy, rep {rep:g}, {length} tokens"
    return (f"sample T={settings.get('temperature'):g} top_p={settings.get('top_p', 1.0):g} "
            f"top_k={settings.get('top_k', 0) or 'all'} rep {rep:g}, {length} tokens")


def is_deterministic(spec: JudgeSpec) -> bool:
    """Whether two requests with the same prompt and media get the same text by construction:
    greedy (or argmax-temperature) decoding of a local model. API judges never are."""
    if spec.backend in ("openai", "cpu"):
        return False
    settings = protocol(spec)
    return not settings["do_sample"] or settings["temperature"] < GREEDY_BELOW


SHARE_CHOICES = ("auto", True, False)


def resolve_sharing(choice: str | bool, spec: JudgeSpec) -> bool:
    """Whether one description serves both orders. ``auto`` (the default) follows the paper:
    its code describes each order afresh, which equals sharing only when decoding is
    deterministic (greedy local models); a sampling or API judge describes per order."""
    if isinstance(choice, str) and choice.lower() in ("true", "false", "yes", "no"):
        choice = choice.lower() in ("true", "yes")
    if choice not in SHARE_CHOICES:
        raise ValueError(f"share_descriptions must be 'auto', True or False, got {choice!r}")
    return is_deterministic(spec) if choice == "auto" else bool(choice)


def check_yaml_generation(generation: dict, file: str) -> None:
    """What the registry demands of a local judge's ``generation:``: valid knobs and a stated
    length (transformers would otherwise stop after 20 new tokens on checkpoints whose
    ``generation_config.json`` sets none)."""
    settings = normalise(generation, who=file)
    if "max_new_tokens" not in settings:
        raise DecodingError(
            f"{file}: field 'generation.max_new_tokens' is required for a local judge: checkpoints whose "
            "generation_config.json sets no length stop after 20 new tokens in transformers (the paper's "
            "wrappers pass max_new_tokens=512; Qwen2.5-Omni's generate uses 1024)"
        )
