"""The names a reader sees: judges, writing models, columns and strategies in words, not code.

One home for every display name, so a table, a figure and a sentence call a thing the same. The
files keep the code names (``metrics.csv`` stays keyed by ``minilm_rm``); only what is shown is
renamed. A name without an entry is shown as it is (a new judge YAML appears under its own name,
never hidden), with underscores as spaces for columns.
"""

from __future__ import annotations

import pandas as pd

JUDGES = {
    "length": "Longer-text rule",
    "source": "Writer rule",
    "minilm_rm": "MiniLM reward model",
    "minilm_rm_nolen": "MiniLM reward model, length removed",
    "random": "Random",
    "always_a1": "Always a1",
    "qwen25omni": "Qwen2.5-Omni",
    "qwen25omni_3b": "Qwen2.5-Omni-3B",
    "qwen25vl": "Qwen2.5-VL",
    "qwen2audio": "Qwen2-Audio",
    "qwen25": "Qwen2.5",
    "llavanextvideo": "LLaVA-NeXT-Video",
    "gpt4o": "GPT-4o",
    "gpt41": "GPT-4.1",
    "gemini15flash": "Gemini-1.5-Flash (stand-in)",
    "qwen3omni": "Qwen3-Omni-30B-A3B",
    "qwen3vl": "Qwen3-VL-8B",
    "gemma3n": "Gemma 3n E4B",
    "qwen3_8b": "Qwen3-8B",
    "gpt5": "GPT-5 (2025-08-07)",
    "gpt5mini": "GPT-5 mini (2025-08-07)",
}
WRITERS = {"mercaptionplus": "MER-Caption+", "merrfine": "MERR-Fine",
           "mercaptionplus_masked": "MER-Caption+, emotion words masked", "merrfine_half": "MERR-Fine, first half"}
STRATEGIES = {"-": "—", "": "—"}
COLUMNS = {
    "verbosity": "Verbosity: % for the padded copy", "matched_waf": "Length-matched v1: 2-class WAF",
    "content": "Content: % for the original", "fill_command": "Command that fills the row",
    "judge": "Judge", "source": "Source", "strategy": "Strategy", "input_type": "Input", "rounds": "Rounds",
    "two_class_waf": "2-class WAF", "two_class_acc": "2-class ACC", "three_class_waf": "3-class WAF",
    "three_class_acc": "3-class ACC", "swap_consistency": "Swap consistency", "round_consistency": "Round consistency",
    "len_balanced_acc": "Length-balanced accuracy", "len_concordant_acc": "Accuracy, longer preferred",
    "len_discordant_acc": "Accuracy, shorter preferred", "len_coef": "Length coefficient",
    "lc_waf": "Length-controlled WAF", "unparsed_pct": "Unparsed %", "source_label": "Source",
    "n_concordant": "Pairs, longer preferred", "n_discordant": "Pairs, shorter preferred",
    "len_separated": "Length separates", "mean_length": "Mean length", "median_length": "Median length",
    "longer_pct": "Longer %", "preferred_pct": "Preferred %", "ci_low": "95% CI low", "ci_high": "95% CI high",
    "pvalue": "p", "p_holm": "p (Holm)", "pvalue_holm": "p (Holm)", "rank_biserial": "Rank-biserial r",
    "labels_from": "Labels from", "two_class_waf_lo": "2-class WAF, 95% CI low",
    "two_class_waf_hi": "2-class WAF, 95% CI high", "swap_consistency_lo": "Swap consistency, 95% CI low",
    "swap_consistency_hi": "Swap consistency, 95% CI high", "swap_consistency_std": "Swap consistency, std",
    "mode": "Votes from", "k": "k", "judges": "Judges", "samples": "Samples", "count": "Count", "pairs": "Pairs", "quantity": "Quantity", "percent": "Percent", "vote_two_class_waf": "Vote 2-class WAF",
    "vote_two_class_acc": "Vote 2-class ACC", "vote_three_class_waf": "Vote 3-class WAF",
    "vote_three_class_acc": "Vote 3-class ACC", "log_strength": "Log strength",
    "masked_relation": "MER-Caption+ over its masked copy", "truncated_relation": "MERR-Fine over its first half",
    "length_coef": "Length coefficient (style control)", "diagnosis": "Diagnosis",
    "accuracy": "Judge accuracy", "both_orders": "Orders judged", "n_comparisons": "Comparisons needed",
    "calls": "Judge calls",
}


def judge(name: object) -> str:
    """A judge's display name (its code name when it has none)."""
    return JUDGES.get(str(name), str(name))


def writer(name: object) -> str:
    return WRITERS.get(str(name), str(name))


def cell(judge_name: object, strategy: object) -> str:
    """A judge cell as a reader sees it: "Writer rule", or "Qwen2.5-Omni (S2)" where the judge has
    strategies (a model-free rule has the strategy "-", which is not shown)."""
    shown = judge(judge_name)
    return shown if str(strategy) in STRATEGIES else f"{shown} ({strategy})"


def column(name: object) -> str:
    """A column's display name; an unknown snake_case name with spaces for underscores."""
    return COLUMNS.get(str(name), str(name).replace("_", " "))


def p_text(p: float) -> str:
    """A p-value in a sentence: "p < 0.001" or "p = 0.006"."""
    shown = p_value(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def p_value(p: float) -> str:
    """A p-value as a paper prints it: "< 0.001" below a thousandth, else three decimals."""
    if p is None or pd.isna(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
