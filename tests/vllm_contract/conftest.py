"""The vLLM contract tests run only where the real vLLM is importable (``make test-vllm``
builds that environment); in the main suite this folder is not collected."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("vllm") is not None else ["test_*.py"]
