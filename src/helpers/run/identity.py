"""A run's identity: everything that changes one of its predictions or how it is scored.

A run folder of the store is resumed only when the command that opens it has the same
identity as the one that filled it, because resuming otherwise mixes two experiments under
one name (old- and new-prompt answers in one table, predictions scored with the labels of
data that has since been relabelled). The identity is a plain JSON-able dict kept in the
run's manifest (``manifest["identity"]`` and its digest ``manifest["identity_sha256"]``):

``version``       of this scheme (a later scheme never matches an older one by accident)
``judge``         the judge's name, family, checkpoint, generation settings, options, the
                  endpoint (``api_base``) of an API judge (another server behind the same model
                  name answers differently), and the ``engine`` that runs it (transformers, vllm,
                  openai, ...): two engines decode differently (numerics, and a sampling judge's
                  random stream)
``implementation`` for judges that read the pair themselves (CPU, learned): sha256 of the source
                  of the judge class's modules and of any fitted artefact (``PairJudge.implementation``)
``code``          sha256 of the source of every other module on the path from ``RunConfig`` to a
                  stored verdict (:func:`code_identity`): the engine that assigns seeds, orders and
                  rounds; for model judges also the strategies, the prompts and their parser, the
                  backend contract, the family table, the decoding rules, the engine's backend module
                  (``hf``, ``vllm``, ``openai``) and, for judges that see media, the media reader. An
                  edit of any of them (the seed arithmetic of ``engine._cpu_job``) refuses a resume by name
``llm``           the same for the text LLM of S3/S4 (None otherwise)
``strategy``, ``input_type``, ``dataset``, ``seed``
``prompts``       sha256 of each prompt template the strategy sends (and the system prompt)
``data_sha256``   sha256 of the files the texts and labels come from (or of the caller's pairs)
``parameters``    any further run parameter that changes predictions: ``descriptions_shared`` (S2-S4) and
                  ``media`` (``none``/``mismatched``; absent for a judge shown its own clips)

What is deliberately NOT in it: batch size, media folder (they change
how answers are produced, not which), and the *scope* -- samples, orders, rounds. A row is
keyed by strategy|order|round|sample and its content is fixed by the identity alone (round r
uses seed + r; a sample's texts and label are fixed by the data hash), so a run may grow or
shrink its scope between sessions (``limit=10`` first, the full set later, one more round)
without mixing anything. The scope of each session is recorded in ``manifest["scope"]``;
``helpers.run.launch`` checks that a folder holds every row a cell asks for.

To add a run parameter that changes predictions, pass it in ``parameters`` of
:func:`build_identity` -- that is a ``RunConfig`` field of ``helpers.run.engine`` (the one schema
of run parameters: 01_infer and the grid derive theirs from it), resolved where the run's judges
or pairs are (``RunJudges``, ``RunPairs``), which :func:`plan_runs` adds (as description sharing
enters, resolved, as ``descriptions_shared``); a changed value then refuses resumption by name.

:func:`plan_runs` turns a run's judges and pairs into one :class:`RunPlan` per run folder (its
id, identity, scope and the row keys it must hold), and :func:`check_folders` refuses, before any
model loads, a folder that holds a run of another identity.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from helpers import prompts
from helpers.data import RunPairs
from helpers.digest import module_sha256, sha256_hex
from helpers.judges.base import STRATEGY_RECORDS, JudgeSpec
from helpers.judges.registry import BACKEND_CLASSES, RunJudges, import_object
from helpers.run.store import StoreError, make_run_id, read_manifest, row_key

IDENTITY_VERSION = 1
SPEC_FIELDS = ("name", "family", "checkpoint", "generation", "options", "api_base")


class IdentityError(StoreError):
    """A run folder holds a run of another identity; the message names every changed field."""


def spec_identity(spec: JudgeSpec | dict | None, engine: str | None = None) -> dict | None:
    """What of a judge's YAML shapes its answers (a label can point at new weights, so the
    name is kept too: two judges never share a folder), and the engine that runs it."""
    if spec is None:
        return None
    record = spec if isinstance(spec, dict) else spec.__dict__
    return {**{f: record.get(f) for f in SPEC_FIELDS}, "engine": engine}


def prompt_keys(spec: JudgeSpec, strategy: str) -> list[str]:
    """The prompt templates (keys of ``params/prompts.yaml``) a strategy sends for this judge."""
    record = STRATEGY_RECORDS[strategy]
    if record.verdict_role == "cpu":
        return []
    keys = list(record.prompts)
    if record.describes:
        keys.insert(0, spec.options.get("describe_prompt", "describe_input"))
    system = spec.options.get("system_prompt")
    if system:
        keys.append(system)
    return keys


def prompt_identity(spec: JudgeSpec, strategy: str) -> dict[str, str]:
    """sha256 (16 hex digits) of each template the strategy sends, read from the file now."""
    hashes = prompts.prompt_hashes()
    return {key: hashes[key] for key in prompt_keys(spec, strategy)}


def implementation_identity(spec: JudgeSpec) -> dict | None:
    """The code (and fitted artefacts) of a judge that reads the pair itself -- a CPU or learned
    judge's rule lives in our source, not in weights, so its source hash is what a checkpoint
    is to a model (``PairJudge.implementation``). None for model judges."""
    if spec.backend != "cpu":
        return None
    path = spec.options.get("judge_class")
    return import_object(path).implementation(spec) if path else None


ENGINE_CODE = ("helpers.run.engine",)
"""Modules every run's verdicts pass through: the loop that assigns seeds, orders and rounds."""
MODEL_CODE = ("helpers.run.strategies", "helpers.prompts", "helpers.judges.base", "helpers.judges.families",
              "helpers.judges.decoding")
"""Modules a model judge's verdicts pass through besides its engine's backend module: the
strategies, the prompt texts and their parser, the backend contract, the family table, decoding."""
MEDIA_CODE = "helpers.judges.media"


def code_identity(spec: JudgeSpec, input_type: str, engines: Sequence[str | None]) -> dict[str, str]:
    """sha256 of the source of each module on the path from ``RunConfig`` to this run's stored
    verdicts (see the module docstring); a CPU judge's own modules are in ``implementation``."""
    modules = list(ENGINE_CODE)
    if spec.backend != "cpu":
        modules += MODEL_CODE
        modules += [BACKEND_CLASSES[e].partition(":")[0] for e in engines if e in BACKEND_CLASSES]
        if input_type != "text":
            modules.append(MEDIA_CODE)
    return {module: module_sha256(module) for module in sorted(dict.fromkeys(modules))}


def build_identity(*, spec: JudgeSpec, strategy: str, input_type: str, dataset: str, seed: int,
                   data_sha256: dict[str, str], llm_spec: JudgeSpec | None = None,
                   parameters: dict | None = None, engine: str | None = None,
                   llm_engine: str | None = None) -> dict:
    """The identity of one run folder (see the module docstring for each field)."""
    uses_llm = STRATEGY_RECORDS[strategy].uses_llm
    return {
        "version": IDENTITY_VERSION, "judge": spec_identity(spec, engine),
        "implementation": implementation_identity(spec),
        "code": code_identity(spec, input_type, [engine, llm_engine if uses_llm else None]),
        "llm": spec_identity(llm_spec, llm_engine) if STRATEGY_RECORDS[strategy].uses_llm else None,
        "strategy": strategy, "input_type": input_type, "dataset": dataset, "seed": int(seed),
        "prompts": prompt_identity(spec, strategy), "data_sha256": dict(sorted(data_sha256.items())),
        "parameters": dict(sorted((parameters or {}).items())),
    }


def identity_sha256(identity: dict) -> str:
    """Digest of an identity (JSON with sorted keys): equal digests, same run."""
    text = json.dumps(identity, sort_keys=True, default=str, ensure_ascii=False)
    return sha256_hex(text)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def identity_changes(before: dict | None, now: dict) -> list[tuple[str, object, object]]:
    """``(field, before, now)`` for every leaf that differs (dotted paths such as
    ``prompts.S1`` or ``data_sha256.preference_emoprefer.csv``)."""
    old, new = _flatten(json.loads(json.dumps(before or {}, default=str))), _flatten(
        json.loads(json.dumps(now, default=str)))
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def describe_changes(changes: list[tuple[str, object, object]], limit: int = 12) -> str:
    """One line per changed field, ``field: before -> now`` (values shortened)."""
    def short(value: object) -> str:
        text = "(absent)" if value is None else repr(value)
        return text if len(text) <= 70 else text[:67] + "..."
    lines = [f"  {name}: {short(a)} -> {short(b)}" for name, a, b in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more")
    return "\n".join(lines)


def check_identity(folder: object, before: dict | None, identity: dict, has_rows: bool) -> None:
    """Refuse to resume ``folder`` when its manifest records another identity ``before`` (or,
    holding rows, none at all: it was written before identities were recorded, so it cannot be checked)."""
    if before is None and not has_rows:
        return  # a new folder, or one whose run failed before writing anything
    if before is None:
        raise IdentityError(
            f"run folder {folder} holds rows but its manifest records no run identity (it was written before "
            "identities were recorded, or the manifest was removed), so whether its rows were made with the same "
            "judge, prompts and data cannot be checked. Write to a new run folder (another output_dir or run_id), "
            "or pass overwrite=True (papermill: -p overwrite True; grid: --overwrite) to move it aside "
            "(into <output_dir>/.replaced/) and run afresh.")
    changes = identity_changes(before, identity)
    if not changes:
        return
    names = [name.removeprefix("judge.") for name, _, _ in changes]
    was = ", ".join(f"{n}={b!r}" if len(repr(b)) <= 40 else f"{n}={repr(b)[:37]}..."
                    for n, (_, b, _) in zip(names, changes, strict=True))
    raise IdentityError(
        f"run folder {folder} holds a run made with other {', '.join(dict.fromkeys(names))} ({was}); resuming "
        "would mix old and new rows under one name. Give the judge a new name or write to a new run folder "
        "(another output_dir or run_id), or pass overwrite=True (papermill: -p overwrite True; grid: --overwrite) "
        "to move the old folder aside (into <output_dir>/.replaced/) and start this run afresh.\n"
        f"Changed (before -> now):\n{describe_changes(changes)}"
    )


# --------------------------------------------------------------------------- the folders of a run


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run folder a run writes: its id, identity (and digest), scope and the row keys it must hold."""

    run_id: str
    strategy: str
    llm: JudgeSpec | None
    identity: dict
    identity_sha256: str
    scope: dict
    expected: frozenset[str]


def plan_runs(judges: RunJudges, pairs: RunPairs, *, dataset: str, seed: int, orders: Sequence[str], rounds: int,
              run_id: str | None = None, media: str = "real") -> list[RunPlan]:
    """One plan per strategy's run folder (``run_id`` names a single strategy's folder, or
    prefixes several): what a run writes and what a grid compares before it calls a cell done."""
    names = pairs.names
    scope = {"samples": len(names), "samples_sha256": pairs.samples_sha256,
             "orders": list(orders), "rounds": rounds}
    return [_plan(judges, pairs, record.name, dataset=dataset, seed=seed, scope=scope, run_id=run_id, media=media,
                  expected=frozenset(row_key(record.name, o, r, n) for o in orders for r in range(rounds)
                                     for n in names))
            for record in judges.strategies]


def _plan(judges: RunJudges, pairs: RunPairs, strategy: str, *, dataset: str, seed: int, scope: dict,
          run_id: str | None, expected: frozenset[str], media: str = "real") -> RunPlan:
    record = STRATEGY_RECORDS[strategy]
    llm = judges.llm_spec if record.uses_llm else None
    # description sharing changes S2-S4's descriptions (and so their verdicts), not S1's
    parameters = {"descriptions_shared": judges.descriptions_shared} if record.describes else {}
    shows_media = record.verdict_role != "cpu" and judges.input_type != "text"
    if media != "real" and shows_media:  # what the judge was shown (absent = its own clips, as before)
        parameters["media"] = media
    identity = build_identity(spec=judges.spec, strategy=strategy, input_type=judges.input_type, dataset=dataset,
                              seed=seed, data_sha256=pairs.identity_data, llm_spec=llm, parameters=parameters,
                              engine=judges.engines["mllm"], llm_engine=judges.engines["llm"] if llm else None)
    rid = make_run_id(judges.spec.name, strategy, judges.input_type, dataset, llm.name if llm else None, seed,
                      media=parameters.get("media", "real"))
    if run_id:
        rid = run_id if len(judges.strategies) == 1 else f"{run_id}__{strategy}"
    return RunPlan(run_id=rid, strategy=strategy, llm=llm, identity=identity,
                   identity_sha256=identity_sha256(identity), scope=scope, expected=expected)


def check_folders(plans: Sequence[RunPlan], root: Path) -> None:
    """Refuse before any model loads (and before S1 of an ``all`` run writes anything) when a
    folder of the run holds a run of another identity; the locked check in each folder repeats it."""
    for plan in plans:
        folder = root / plan.run_id
        predictions = folder / "predictions.jsonl"
        has_rows = predictions.is_file() and predictions.stat().st_size > 0
        manifest = read_manifest(folder)
        check_identity(folder, manifest.identity if manifest is not None else None, plan.identity, has_rows)


__all__ = ["IDENTITY_VERSION", "IdentityError", "build_identity", "identity_sha256", "identity_changes",
           "check_identity", "prompt_keys", "spec_identity", "RunPlan", "plan_runs", "check_folders"]
