"""The paper's prompts, the text cleaning applied before insertion, and the answer parser.

The prompt texts live in ``params/prompts.yaml`` (quoted from the EmoPrefer authors' code) so
that a reproduction sends exactly what the paper sent; this module only fills them in. The
parser reproduces the paper's rule and also says which branch fired, because a judge whose
answers mostly fall through to the default ``same`` is not judging at all.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from helpers import paths
from helpers.data import FALLBACK_RULE, LABELS, fallback_share  # noqa: F401 - the parser's labels and fallback, defined with the data
from helpers.digest import PROMPT_HASH_LEN, sha256_hex

PROMPT_KEYS = ("S1", "describe_video", "describe_input", "S2_judge", "S4_reason", "S4_extract", "system_omni")

# Leading words the paper's text-LLM post-processing removes (each tested once, in this order).
TEXT_LLM_PREFIXES = ("输入", "输出", "翻译", "让我们来翻译一下：", "output", "Output", "input", "Input")


class PromptError(ValueError):
    """``params/prompts.yaml`` is missing a prompt or holds something that is not text."""


def prompts_file() -> Path:
    return paths.params_dir() / "prompts.yaml"


@cache
def _load(path: str, stamp: tuple[int, int] | None = None) -> dict[str, str]:
    """Parsed templates, cached per file version (``stamp``: mtime and size), so an edited
    prompts file is read again: run identities hash what the file says now."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    missing = [key for key in PROMPT_KEYS if key not in raw]
    if missing:
        raise PromptError(f"{path}: missing prompt(s) {', '.join(missing)}")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise PromptError(f"{path}: prompt {key!r} must be a string, got {type(value).__name__}")
    return dict(raw)


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """All prompt templates by key (a copy: callers cannot alter the cached texts)."""
    path = Path(path or prompts_file())
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = None
    return dict(_load(str(path), stamp))


def prompt(key: str) -> str:
    texts = load_prompts()
    if key not in texts:
        raise PromptError(f"unknown prompt {key!r}; known: {', '.join(sorted(texts))}")
    return texts[key]


def clean_text(text: str) -> str:
    """Newlines and tabs become spaces, then strip: the paper does this to every description
    (and to the reasoning) before inserting it, so prompts stay one paragraph."""
    return str(text).replace("\n", " ").replace("\t", " ").strip()


def build_s1(a1: str, a2: str) -> str:
    return prompt("S1").format(a1=clean_text(a1), a2=clean_text(a2))


def build_describe(which: str = "describe_video") -> str:
    """The description request; ``describe_video`` for the paper's batch path (Qwen2.5-Omni,
    Qwen2.5-VL), ``describe_input`` for its per-sample path (the other models)."""
    if which not in ("describe_video", "describe_input"):
        raise PromptError(f"describe prompt must be describe_video or describe_input, got {which!r}")
    return prompt(which)


def build_judge(description: str, a1: str, a2: str) -> str:
    """S2 step 2 and S3: judge two descriptions against a reference description."""
    return prompt("S2_judge").format(description=clean_text(description), a1=clean_text(a1), a2=clean_text(a2))


def build_reason(description: str, a1: str, a2: str) -> str:
    """S4 step 1: the same comparison, asking for reasoning instead of a bare label."""
    return prompt("S4_reason").format(description=clean_text(description), a1=clean_text(a1), a2=clean_text(a2))


def build_extract(reason: str) -> str:
    """S4 step 2: extract a label from the reasoning of step 1."""
    return prompt("S4_extract").format(reason=clean_text(reason))


def strip_text_llm_prefix(response: str) -> str:
    """The paper's post-processing of text-LLM answers: drop a leading 'Output'-like word and
    a colon, and remove newlines (otherwise 'Output: a2' would parse by first occurrence)."""
    text = response.strip()
    for prefix in TEXT_LLM_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.strip()
    for colon in (":", "："):
        if text.startswith(colon):
            text = text[len(colon):]
    return text.strip().replace("\n", "").strip()


def parse_label(response: str, *, text_llm: bool = False) -> tuple[str, str]:
    """``(label, rule_branch)``: the paper's rule, with the branch that decided recorded.

    Branches: ``prefix`` (the lower-cased answer starts with a1/a2/same), ``first_occurrence``
    (the label occurring first anywhere wins) and ``default_same`` (no label at all).
    """
    text = strip_text_llm_prefix(response) if text_llm else response.strip()
    text = text.lower()
    for label in LABELS:
        if text.startswith(label):
            return label, "prefix"
    positions = {label: text.find(label) for label in LABELS if label in text}
    if positions:
        return min(positions, key=positions.get), "first_occurrence"
    return "same", FALLBACK_RULE


def prompt_hashes(path: str | Path | None = None) -> dict[str, str]:
    """sha256 (first 16 hex digits) of each template, for run manifests: two runs with equal
    hashes sent the same texts."""
    return {key: text_hash(text) for key, text in load_prompts(path).items()}


def text_hash(text: str | None) -> str | None:
    """The hash of a prompt: sha256 (first 16 hex digits) of a template or of a text actually
    sent (a filled describe prompt, a system prompt), so the two compare; None when there is no
    such text (no system prompt)."""
    return None if text is None else sha256_hex(text, PROMPT_HASH_LEN)
