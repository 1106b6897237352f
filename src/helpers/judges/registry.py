"""Judges by name: one YAML file per judge in ``params/models/``, and the factories that turn
a judge into something that generates (a ``Backend``) or decides (a ``PairJudge``).

Adding a judge of a known family is adding a YAML file. Backends are imported only when used
("module:Class" strings), so the registry works where vLLM, transformers or openai are absent.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from helpers import paths
from helpers.data import INPUT_TYPES
from helpers.judges import decoding
from helpers.judges.base import STRATEGIES, STRATEGY_RECORDS, Backend, JudgeSpec, PairJudge, Strategy
from helpers.judges.decoding import DecodingError, check_yaml_generation, resolve_sharing
from helpers.judges.families import ENGINES
from helpers.secrets import redact, secrets_from_env

SPEC_BACKENDS = ("local", "openai", "cpu")
SPEC_STRATEGIES = (*STRATEGIES, "-")  # a CPU judge lists "-" (it reads the texts itself)
BACKEND_CLASSES = {
    "transformers": "helpers.judges.hf:TransformersBackend",
    "vllm": "helpers.judges.vllm:VLLMBackend",
    "openai": "helpers.judges.openai:OpenAIBackend",
}
_FIELDS = {f.name: f for f in dataclasses.fields(JudgeSpec)}
DEFAULT_JUDGE_LLM = "qwen25"  # the paper's external text LLM of S3/S4
EngineChoice = str | Callable[[JudgeSpec], Backend]
"""A run's engine choice: ``auto``, ``transformers``, ``vllm``, ``openai``, or a caller's own
``spec -> Backend`` (tests, custom servers), recorded as the engine ``custom``."""


class RegistryError(ValueError):
    """A judge that does not exist or a judge file that cannot be used; the message says which."""


def models_dir() -> Path:
    return paths.params_dir() / "models"


def list_judges(folder: str | Path | None = None) -> list[str]:
    """Names of every judge with a YAML file, sorted."""
    return sorted(p.stem for p in Path(folder or models_dir()).glob("*.yaml"))


def load_spec(name: str, folder: str | Path | None = None) -> JudgeSpec:
    """The judge ``name`` as described by ``params/models/<name>.yaml``, validated."""
    folder = Path(folder or models_dir())
    file = folder / f"{name}.yaml"
    if not file.is_file():
        known = ", ".join(list_judges(folder)) or "(none)"
        raise RegistryError(f"unknown judge {name!r}: no {file}. Known judges: {known}")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistryError(f"{file}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{file}: must be a mapping of JudgeSpec fields, got {type(raw).__name__}")
    return _spec_from_mapping(raw, file)


def _spec_from_mapping(raw: dict, file: Path) -> JudgeSpec:
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise RegistryError(f"{file}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}")
    raw = {**raw, "name": raw.get("name", file.stem)}
    for required in ("family", "backend"):
        if not raw.get(required):
            raise RegistryError(f"{file}: field {required!r} is required")
    if raw["name"] != file.stem:
        raise RegistryError(f"{file}: field 'name' is {raw['name']!r} but must equal the file name {file.stem!r}")
    checks = [
        ("backend", raw["backend"] in SPEC_BACKENDS, f"must be one of {SPEC_BACKENDS}"),
        ("input_type", raw.get("input_type", "text") in INPUT_TYPES, f"must be one of {INPUT_TYPES}"),
        ("batch_size", isinstance(raw.get("batch_size", 1), int) and raw.get("batch_size", 1) >= 1,
         "must be a positive integer"),
        ("generation", isinstance(raw.get("generation") or {}, dict), "must be a mapping"),
        ("options", isinstance(raw.get("options") or {}, dict), "must be a mapping"),
        ("shape", isinstance(raw.get("shape") or {}, dict), "must be a mapping"),
        ("strategies", isinstance(raw.get("strategies", []), list)
         and set(raw.get("strategies", [])) <= set(SPEC_STRATEGIES), f"must be a list drawn from {SPEC_STRATEGIES}"),
    ]
    for field, ok, rule in checks:
        if not ok:
            raise RegistryError(f"{file}: field {field!r} {rule} (value {raw.get(field)!r})")
    if raw["backend"] == "cpu" and not (raw.get("options") or {}).get("judge_class"):
        raise RegistryError(f"{file}: field 'options.judge_class' is required for backend cpu ('module:Class')")
    if raw["backend"] != "cpu" and not raw.get("checkpoint"):
        raise RegistryError(f"{file}: field 'checkpoint' is required for backend {raw['backend']!r}")
    if raw["backend"] == "openai" and not raw.get("api_key_env"):
        raise RegistryError(f"{file}: field 'api_key_env' (the NAME of the env variable with the key) is required")
    raw["generation"] = dict(raw.get("generation") or {})
    if raw["backend"] == "local" and (raw.get("options") or {}).get("engine", "transformers") not in ENGINES:
        raise RegistryError(f"{file}: field 'options.engine' must be one of {ENGINES} "
                            f"(value {raw['options']['engine']!r})")
    if raw["backend"] == "local":
        try:
            check_yaml_generation(raw["generation"], str(file))
        except DecodingError as exc:
            raise RegistryError(str(exc)) from None
    raw["options"] = dict(raw.get("options") or {})
    raw["shape"] = dict(raw.get("shape") or {})
    if "strategies" in raw:
        raw["strategies"] = tuple(raw["strategies"])
    return JudgeSpec(**raw)


def import_object(path: str):
    """``'package.module:Name'`` -> the object, with an error that names the string."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise RegistryError(f"{path!r} is not of the form 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise RegistryError(f"module {module_name!r} has no {attr!r} (from {path!r})") from exc


def _gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def vllm_available() -> bool:
    """Importable without importing it (vLLM is slow to import and absent here)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(spec: JudgeSpec, backend: str = "auto") -> str:
    """Which backend will serve ``spec``: the user's explicit choice, ``openai`` for API judges,
    else the engine the judge's YAML names (``options.engine``: the one the paper ran it on;
    transformers where it names none). A judge whose engine is vLLM runs on transformers, with a
    warning, where vLLM cannot run (not importable or no CUDA GPU); the engine that ran enters the
    run's identity and its cached steps' ids, so the two are never mixed."""
    if spec.backend == "cpu":
        return "cpu"
    if backend != "auto":
        if backend not in BACKEND_CLASSES:
            raise RegistryError(f"backend must be 'auto' or one of {tuple(BACKEND_CLASSES)}, got {backend!r}")
        return backend
    if spec.backend == "openai":
        return "openai"
    engine = spec.options.get("engine", "transformers")
    if engine not in ENGINES:
        raise RegistryError(f"judge {spec.name!r}: options.engine must be one of {ENGINES}, got {engine!r}")
    if engine == "vllm" and not (vllm_available() and _gpu_present()):
        warnings.warn(f"judge {spec.name!r}: its engine is vLLM (options.engine), which cannot run here (needs vllm "
                      "and a CUDA GPU); running it on transformers (a different engine: its rows and cached "
                      "descriptions are kept apart from vLLM's)", UserWarning, stacklevel=1)
        return "transformers"
    return engine


def engine_line(spec: JudgeSpec, backend: str = "auto") -> str:
    """Which engine a run of ``spec`` uses, as a plan states it: the explicit choice, or for ``auto``
    the engine the judge's YAML names and, for vLLM, what this machine falls back to (no warning:
    a plan runs nothing)."""
    if backend != "auto" or spec.backend != "local":
        return resolve_backend(spec, backend)
    engine = spec.options.get("engine", "transformers")
    if engine == "vllm" and not (vllm_available() and _gpu_present()):
        return "vllm (its YAML; transformers here, where vLLM cannot run)"
    return f"{engine} (its YAML)"


def decoding_line(spec: JudgeSpec) -> str:
    """A judge's decoding protocol in one line: for a local judge its complete settings
    (:func:`decoding.protocol`, what both engines send), for an API judge what its YAML sends."""
    if spec.backend == "cpu":
        return "model-free (reads the two texts)"
    if spec.backend == "openai":
        stated = decoding.normalise(spec.generation, who=f"judge {spec.name!r}")
        return ", ".join(f"{k}={v}" for k, v in stated.items()) or "vendor defaults"
    return decoding.describe(decoding.protocol(spec))


def make_backend(spec: JudgeSpec, backend: str = "auto") -> Backend:
    """A generating backend for ``spec``; ``backend.kind`` records which one was chosen."""
    kind = resolve_backend(spec, backend)
    if kind == "cpu":
        raise RegistryError(f"judge {spec.name!r} is a CPU judge: use make_pair_judge, not make_backend")
    instance = import_object(BACKEND_CLASSES[kind])(spec)
    instance.kind = kind  # the engine chosen (Backend.kind), also for a class registered under another name
    return instance


def make_pair_judge(spec: JudgeSpec) -> PairJudge:
    """The ``PairJudge`` named by ``options.judge_class`` of a CPU judge."""
    path = spec.options.get("judge_class")
    if not path:
        raise RegistryError(f"judge {spec.name!r} has no options.judge_class")
    cls = import_object(path)
    if not (isinstance(cls, type) and issubclass(cls, PairJudge)):
        raise RegistryError(f"{path!r} (judge {spec.name!r}) is not a PairJudge subclass")
    return cls(spec)


def backend_info(backend: Backend) -> dict:
    """What a backend says about itself (checkpoint, local path, dtype, device, versions,
    endpoint, key variable NAME), for run manifests.

    Backends that say nothing are recorded by class. As a last guard, the key held in the
    judge's key variable is masked wherever it appears (``helpers.secrets.redact``), so a
    manifest can never carry the key.
    """
    info = dict(backend.info)
    info.setdefault("class", f"{type(backend).__module__}:{type(backend).__qualname__}")
    return redact(info, secrets_from_env([backend.spec.api_key_env]))


# --------------------------------------------------------------------------- the judges of a run


@dataclasses.dataclass(frozen=True)
class RunJudges:
    """The judges of one run as they will run, resolved once before any model loads.

    ``spec`` (placed on the run's device, with the run's batch size), the S3/S4 text LLM
    ``llm_spec`` (None when no chosen strategy needs one), the chosen ``strategies`` as records,
    the ``input_type`` they read, the ``engines`` of the judge (``mllm``) and of the text LLM
    (``llm``) as identities record them, whether S2-S4 share one description across orders
    (``descriptions_shared``; None for a CPU judge), the ``factories`` that load each backend on
    first use, and the ``secrets``: the values of their key variables, which the store redacts
    from everything it writes (kept out of ``repr``). Resolving once means one fallback warning,
    and the identity, the cache keys and the backends cannot disagree about an engine."""

    spec: JudgeSpec
    llm_spec: JudgeSpec | None
    strategies: tuple[Strategy, ...]
    input_type: str
    engines: dict[str, str | None]
    descriptions_shared: bool | None
    factories: dict[str, Callable[[], Backend] | None]
    secrets: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def cpu(self) -> bool:
        """A judge that reads the two texts itself (no backend, strategy ``-``)."""
        return self.spec.backend == "cpu"


def run_judges(model: str | JudgeSpec, *, strategy: str = "all", judge_llm: str | JudgeSpec | None = None,
               input_type: str | None = None, batch_size: int | None = None, device: str | None = None,
               engine: EngineChoice = "auto", llm_engine: EngineChoice | None = None,
               share_descriptions: str | bool = "auto") -> RunJudges:
    """Everything a run needs to know about its judges (see :class:`RunJudges`). ``batch_size``
    reaches the spec because backends chunk by their spec's batch size; ``device`` places local
    judges; the text LLM follows the judge's engine unless ``llm_engine`` names its own."""
    spec = place(_spec(model), device)
    if batch_size:
        spec = dataclasses.replace(spec, batch_size=int(batch_size))
    strategies = _strategies(spec, strategy)
    llm_spec = None
    if spec.backend != "cpu" and any(s.uses_llm for s in strategies):
        llm_spec = place(_spec(judge_llm or DEFAULT_JUDGE_LLM), device)
    llm_choice = None if llm_spec is None else llm_engine or _llm_engine_choice(engine, llm_spec)
    engines = {"mllm": engine_kind(spec, engine), "llm": None if llm_spec is None else engine_kind(llm_spec, llm_choice)}
    factories = {"mllm": None if spec.backend == "cpu" else backend_factory(spec, engine, engines["mllm"]),
                 "llm": None if llm_spec is None else backend_factory(llm_spec, llm_choice, engines["llm"])}
    return RunJudges(
        spec=spec, llm_spec=llm_spec, strategies=strategies, engines=engines, factories=factories,
        input_type="text" if spec.backend == "cpu" else (input_type or spec.input_type),
        descriptions_shared=None if spec.backend == "cpu" else resolve_sharing(share_descriptions, spec),
        secrets=secrets_from_env([spec.api_key_env, llm_spec.api_key_env if llm_spec else None]))


def _spec(model: str | JudgeSpec) -> JudgeSpec:
    return model if isinstance(model, JudgeSpec) else load_spec(model)


def place(spec: JudgeSpec, device: str | None) -> JudgeSpec:
    """A local judge placed on ``device`` (the backends' ``options.device``); others unchanged."""
    if not device or spec.backend != "local":
        return spec
    return dataclasses.replace(spec, options={**spec.options, "device": device})


def _strategies(spec: JudgeSpec, strategy: str) -> tuple[Strategy, ...]:
    """The strategies a run executes: CPU judges always run as ``-``; ``all`` is the judge's list."""
    if spec.backend == "cpu":
        return (STRATEGY_RECORDS["-"],)
    names: Sequence[str] = list(spec.strategies) if strategy == "all" else [strategy]
    bad = [s for s in names if s not in STRATEGIES]
    if bad:
        raise ValueError(f"strategy must be one of {STRATEGIES} or 'all' for judge {spec.name!r}, got {bad[0]!r}")
    return tuple(STRATEGY_RECORDS[s] for s in names)


def engine_kind(spec: JudgeSpec, choice: EngineChoice) -> str:
    """The engine a run's identity records: the resolved backend kind; ``custom`` for a caller's
    own ``spec -> Backend`` callable (tests, custom servers), whose engine the caller vouches for."""
    return "custom" if callable(choice) else resolve_backend(spec, choice)


def _llm_engine_choice(choice: EngineChoice, llm_spec: JudgeSpec) -> EngineChoice:
    """The text LLM follows the judge's engine choice, except that an API judge's ``openai``
    does not drag a local text LLM onto an endpoint it does not have."""
    if choice == "openai" and llm_spec.backend != "openai":
        return "auto"
    return choice


def backend_factory(spec: JudgeSpec, choice: EngineChoice, kind: str) -> Callable[[], Backend]:
    """Loads the backend of ``spec`` when called (the pipeline loads one model at a time)."""
    if callable(choice):
        return lambda: choice(spec)
    return lambda: make_backend(spec, kind)
