"""One masker for API keys (``helpers.secrets``): the predictions store, the run manifests, the
backends' reported info and the OpenAI backend's error messages all mask through it."""

from __future__ import annotations

from helpers.secrets import MIN_SECRET_LEN, redact, secrets_from_env

KEY = "sk-test-0123456789"


def test_every_string_of_nested_dicts_lists_and_tuples_is_masked_with_the_variables_name():
    value = {"raw": f"Bearer {KEY}", "rows": [KEY, ("x", f"{KEY}{KEY}")], "n": 3, "none": None,
             "deep": {"url": f"https://x/v1?key={KEY}"}}
    got = redact(value, {"MY_KEY": KEY})
    assert got == {"raw": "Bearer [redacted:MY_KEY]", "rows": ["[redacted:MY_KEY]", ["x", "[redacted:MY_KEY]"]],
                   "n": 3, "none": None, "deep": {"url": "https://x/v1?key=[redacted:MY_KEY]"}}
    assert redact(f"a {KEY} b", {"MY_KEY": KEY}) == "a [redacted:MY_KEY] b"
    assert value["raw"] == f"Bearer {KEY}", "the input is not changed in place"


def test_each_of_several_secrets_is_named_and_no_secrets_changes_nothing():
    assert redact(["one-secret-value", "two-secret-value"], {"A": "one-secret-value", "B": "two-secret-value"}) \
        == ["[redacted:A]", "[redacted:B]"]
    value = {"t": (1, 2)}
    assert redact(value, {}) is value and redact(value, None) is value


def test_a_value_shorter_than_min_secret_len_is_not_a_secret():
    short = "x" * (MIN_SECRET_LEN - 1)
    assert redact(f"text {short} text", {"SHORT": short}) == f"text {short} text"
    assert redact(f"a{'k' * MIN_SECRET_LEN}a", {"LONG": "k" * MIN_SECRET_LEN}) == "a[redacted:LONG]a"
    assert redact(f"Bearer {KEY}", {"NL": f"{KEY}\n"}) == "Bearer [redacted:NL]", "compared stripped"


def test_secrets_come_from_the_named_variables_that_hold_a_key(monkeypatch):
    monkeypatch.setenv("EMOPREFER_TEST_KEY_A", f" {KEY}\n")
    monkeypatch.setenv("EMOPREFER_TEST_KEY_SHORT", "EMPTY")
    monkeypatch.delenv("EMOPREFER_TEST_KEY_UNSET", raising=False)
    names = ["EMOPREFER_TEST_KEY_A", None, "EMOPREFER_TEST_KEY_SHORT", "EMOPREFER_TEST_KEY_UNSET", "EMOPREFER_TEST_KEY_A"]
    assert secrets_from_env(names) == {"EMOPREFER_TEST_KEY_A": KEY}


SENTINEL = "sk-SENTINEL-0f9e8d7c6b5a4321"
VARIANTS = {
    "the key": SENTINEL,
    "reversed": SENTINEL[::-1],
    "upper-cased": SENTINEL.upper(),
    "lower-cased": SENTINEL.lower(),
    "without sk-": SENTINEL.removeprefix("sk-"),
    "cut to 8": SENTINEL[:8],
    "an 8-character piece": SENTINEL[9:17],
    "reversed and upper-cased, cut": SENTINEL[::-1].upper()[3:14],
}


def test_every_simple_variant_of_a_key_is_masked_and_ordinary_text_is_not():
    """Before: an endpoint echoing the key reversed, upper-cased or without ``sk-`` got it
    written into ``predictions.jsonl`` and the manifest's error."""
    for variant, text in VARIANTS.items():
        got = redact(f"echo: <{text}> end", {"K": SENTINEL})
        assert got == "echo: <[redacted:K]> end", variant
    ordinary = "The man frowns; sk- is a prefix; SENTINE is seven letters; 0f9e8d7 too."
    assert redact(ordinary, {"K": SENTINEL}) == ordinary


def test_a_key_read_with_whitespace_is_stripped_with_a_warning_and_a_bad_one_never_shown(monkeypatch):
    import pytest

    from helpers.secrets import SecretError, read_key

    monkeypatch.setenv("EMOPREFER_TEST_KEY_WS", f"  {SENTINEL}\n")
    with pytest.warns(UserWarning, match=r"EMOPREFER_TEST_KEY_WS had whitespace around it") as caught:
        assert read_key("EMOPREFER_TEST_KEY_WS") == SENTINEL
    assert all(SENTINEL not in str(w.message) for w in caught)
    monkeypatch.setenv("EMOPREFER_TEST_KEY_WS", f"{SENTINEL}\n{SENTINEL}")
    with pytest.raises(SecretError, match="has whitespace or control characters inside") as bad:
        read_key("EMOPREFER_TEST_KEY_WS")
    assert SENTINEL not in str(bad.value) and SENTINEL[:8] not in str(bad.value)
    monkeypatch.setenv("EMOPREFER_TEST_KEY_WS", "  ")
    assert read_key("EMOPREFER_TEST_KEY_WS") is None


def test_an_exception_and_its_chained_causes_are_redacted_in_place():
    from helpers.secrets import redact_exception

    try:
        try:
            raise ValueError(f"Invalid header value b'Bearer {SENTINEL}\\n'")
        except ValueError as inner:
            raise RuntimeError(f"request failed: {SENTINEL[::-1]}") from inner
    except RuntimeError as outer:
        redact_exception(outer, {"K": SENTINEL})
        assert str(outer) == "request failed: [redacted:K]"
        assert str(outer.__cause__) == "Invalid header value b'Bearer [redacted:K]\\n'"
