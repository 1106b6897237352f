"""The paper's prompts are sent byte for byte, and its answers parsed by the paper's rule."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import paths, prompts

S2_LAST = "Therefore, the output should be a1, a2, or same. Please direct output the answer without additional reasoning process."


def protocol_file() -> Path | None:
    """The team's copy of the protocol (outside the repo), if this machine has it."""
    candidates = [os.environ.get("EMOPREFER_PROTOCOL"), paths.project_root().parent / "shared" / "protocol"
                  / "emoprefer-prompts.md"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_templates_equal_the_protocol_blocks_byte_for_byte():
    file = protocol_file()
    if file is None:
        pytest.skip("protocol file emoprefer-prompts.md not available (set EMOPREFER_PROTOCOL)")
    blocks = re.findall(r"```\n(.*?)\n```", file.read_text(encoding="utf-8"), re.S)
    texts = prompts.load_prompts()
    assert blocks[0] == texts["S1"]
    assert blocks[1] == texts["describe_video"]
    assert blocks[2] == texts["S2_judge"]
    assert blocks[4] == texts["S4_extract"]
    system = re.search(r"system message `(.*?)`", file.read_text(encoding="utf-8"), re.S).group(1)
    assert " ".join(system.split()) == texts["system_omni"]


def test_the_originals_typos_and_spacing_are_kept():
    texts = prompts.load_prompts()
    assert 'decription:  "{reason}", please' in texts["S4_extract"]
    assert "description." + " " * 9 + "The output" in texts["S4_extract"]
    assert "Please determinate which one" in texts["S1"]
    assert texts["describe_input"] == texts["describe_video"].replace("a given video", "a given input")
    assert all(not t.endswith("\n") and not t.startswith(" ") for t in texts.values())


def test_s4_reasoning_prompt_is_s2_with_its_last_two_sentences_replaced():
    texts = prompts.load_prompts()
    assert texts["S2_judge"].endswith(S2_LAST)
    derived = texts["S2_judge"][: -len(S2_LAST)] + "Please output the answer along with the reasoning process."
    assert texts["S4_reason"] == derived
    assert texts["S4_reason"].endswith("please output 'same'. Please output the answer along with the reasoning process.")


def test_descriptions_are_cleaned_before_insertion():
    assert prompts.clean_text("  line one\n\nline\ttwo\n ") == "line one  line two"
    built = prompts.build_s1("happy\nface", "\tsad ")
    assert built.startswith('We provide two descriptions for a given input: a1: "happy face". a2: "sad".')
    judge = prompts.build_judge("A woman\ncries.", "x", "y")
    assert judge.startswith('We provide a ground truth description: A woman cries. We also provide')
    assert prompts.build_extract("a1 is\nbetter").startswith('Based on the provided decription:  "a1 is better", please')


def test_braces_inside_descriptions_are_sent_verbatim():
    assert 'a1: "{a2} {}".' in prompts.build_s1("{a2} {}", "b")


@pytest.mark.parametrize(
    ("response", "text_llm", "expected"),
    [
        ("a1", False, ("a1", "prefix")),
        ("A2.", False, ("a2", "prefix")),
        ("Same", False, ("same", "prefix")),
        ("The answer is a2, not a1", False, ("a2", "first_occurrence")),
        ("I think a1 is better than a2", False, ("a1", "first_occurrence")),
        ("both are the same as a1", False, ("same", "first_occurrence")),
        ("I cannot tell", False, ("same", "default_same")),
        ("", False, ("same", "default_same")),
        # the text-LLM path strips a leading 'Output:' first; the MLLM path does not
        ("Output: a2", True, ("a2", "prefix")),
        ("Output: a2", False, ("a2", "first_occurrence")),
        ("输出：a1", True, ("a1", "prefix")),
        ("让我们来翻译一下：same", True, ("same", "prefix")),
        ("Input:\na2\n", True, ("a2", "prefix")),
        ("output put a1", True, ("a1", "first_occurrence")),
    ],
)
def test_parsing_rule_and_its_branch(response, text_llm, expected):
    assert prompts.parse_label(response, text_llm=text_llm) == expected


def test_text_llm_prefix_stripping_matches_the_papers_order():
    # each prefix is tested once, in order: 'Output' after '输出' is also removed
    assert prompts.strip_text_llm_prefix("输出Output: a1") == "a1"
    # but an earlier prefix after a later one is not ('Output' then '输出' remains)
    assert prompts.strip_text_llm_prefix("Output输出: a1") == "输出: a1"
    assert prompts.strip_text_llm_prefix(" a1\nbecause\nreasons ") == "a1becausereasons"


def test_prompt_hashes_identify_the_texts(tmp_path):
    hashes = prompts.prompt_hashes()
    assert set(hashes) >= set(prompts.PROMPT_KEYS)
    assert len(set(hashes.values())) == len(hashes)
    changed = tmp_path / "prompts.yaml"
    changed.write_text(prompts.prompts_file().read_text().replace("determinate", "determine"))
    other = prompts.prompt_hashes(changed)
    assert other["S1"] != hashes["S1"] and other["describe_video"] == hashes["describe_video"]


def test_a_prompt_file_missing_a_prompt_is_refused(tmp_path):
    broken = tmp_path / "prompts.yaml"
    broken.write_text("S1: hello\n")
    with pytest.raises(prompts.PromptError, match=r"prompts.yaml: missing prompt\(s\) describe_video"):
        prompts.load_prompts(broken)
