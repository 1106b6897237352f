"""Issue 28: an endpoint that echoes the API key -- whole, reversed, upper-cased, without ``sk-``,
a piece of it -- into its answers and into an error, with the key set with whitespace around
it, leaves none of those variants in any file of the store or in the executed 01_infer notebook
(its papermill parameters, outputs and traceback included)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from local_server import LocalServer, QuietHandler

from helpers import paths

DATA = os.environ.get("EMOPREFER_DATA")
NOTEBOOK = paths.project_root() / "notebooks" / "01_infer.ipynb"
KEY_ENV = "EMOPREFER_TEST_LEAK_KEY"
KEY = "sk-LEAKTEST-9f8e7d6c5b4a3210zyxw"
VARIANTS = {"key": KEY, "reversed": KEY[::-1], "upper": KEY.upper(), "lower": KEY.lower(),
            "without sk-": KEY.removeprefix("sk-"), "piece": KEY[12:22], "reversed piece": KEY[::-1][4:13]}


def echo(key: str) -> str:
    return " | ".join(f"{name}: {transform}" for name, transform in
                      (("key", key), ("reversed", key[::-1]), ("upper", key.upper()), ("lower", key.lower()),
                       ("bare", key.removeprefix("sk-")), ("piece", key[12:22]), ("rpiece", key[::-1][4:13])))


class EchoingEndpoint(QuietHandler):
    """Answers ``a1`` and echoes the Authorization header in every variant; the third request
    gets an HTTP 400 whose body echoes it too (not retried: the run fails with that error)."""

    calls = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Authorization"].removeprefix("Bearer ")
        type(self).calls += 1
        if type(self).calls >= 3:
            body, status = json.dumps({"error": {"message": f"bad key {echo(key)}"}}).encode(), 400
        else:
            content = f"a1. Your request carried {echo(key)}"
            body, status = json.dumps({"choices": [{"message": {"content": content}}]}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
@pytest.mark.skipif(not DATA or not (Path(DATA) / "preference_emoprefer.csv").is_file(),
                    reason="EMOPREFER_DATA does not point at the v1 CSVs")
def test_no_variant_of_an_echoed_key_reaches_the_store_or_the_executed_notebook(tmp_path, monkeypatch):
    import papermill

    server = LocalServer(EchoingEndpoint)
    try:
        root = tmp_path / "project"
        shutil.copytree(paths.params_dir(), root / "params")
        (root / "pyproject.toml").write_text("")
        (root / "params" / "models" / "echo_api.yaml").write_text(yaml.safe_dump({
            "name": "echo_api", "family": "openai", "backend": "openai", "input_type": "text",
            "checkpoint": "gpt-echo", "api_base": server.url, "api_key_env": KEY_ENV, "batch_size": 1,
            "strategies": ["S1"], "generation": {"temperature": 0},
            "options": {"max_retries": 0, "backoff_s": 0.01, "timeout_s": 10}}))
        monkeypatch.setenv("EMOPREFER_ROOT", str(root))
        monkeypatch.setenv(KEY_ENV, f"  {KEY}\n")  # as pasted from a file: stripped, with a warning
        store, executed = tmp_path / "data" / "predictions", tmp_path / "executed.ipynb"
        with pytest.raises(papermill.PapermillExecutionError) as failed:
            papermill.execute_notebook(
                str(NOTEBOOK), str(executed), cwd=str(NOTEBOOK.parent), progress_bar=False,
                parameters={"model": "echo_api", "strategy": "S1", "order": "normal", "rounds": 1, "limit": 4,
                            "output_dir": str(store), "data_dir": DATA})
    finally:
        server.close()
    assert "OpenAIError" in str(failed.value) and f"[redacted:{KEY_ENV}]" in str(failed.value)
    files = [f for f in store.rglob("*") if f.is_file()] + [executed]
    assert {f.name for f in files} >= {"predictions.jsonl", "manifest.json", "executed.ipynb"}
    rows = [json.loads(line) for line in (next(store.glob("*/predictions.jsonl"))).read_text().splitlines()]
    assert len(rows) == 2 and all(f"[redacted:{KEY_ENV}]" in r["raw"] for r in rows)
    for file in files:
        text = file.read_text(encoding="utf-8")
        for variant, value in VARIANTS.items():
            assert value not in text, (file.name, variant)
        assert "had whitespace around it" not in text or KEY not in text
