"""A grid file is checked against ``RunConfig`` before anything runs (issue 28): an unknown key
(with a suggestion), a wrong type, a YAML error or a binary file is one line on stderr and exit 2
of ``python -m helpers.run GRID``; nothing is executed."""

from __future__ import annotations

import pytest
import yaml

from helpers.run import launch

GOOD = {"notebook": "notebooks/01_infer.ipynb", "matrix": {"model": ["always_a1"]},
        "parameters": {"strategy": "-", "rounds": 1, "limit": 2}}


def grid_text(**changes) -> str:
    return yaml.safe_dump(GOOD | changes)


CASES = {
    "matrix typo": (grid_text(matrix={"modle": ["always_a1"]}),
                    "matrix.modle: unknown run parameter 'modle' (did you mean 'model'?)"),
    "parameter typo": (grid_text(parameters={"roundz": 2}),
                       "parameters.roundz: unknown run parameter 'roundz' (did you mean 'rounds'?)"),
    "top-level typo": (grid_text(matrxi={"model": ["x"]}), "unknown key 'matrxi' (did you mean 'matrix'?)"),
    "parameters a list": (grid_text(parameters=[1, 2]), "parameters must be a mapping, not a list ([1, 2])"),
    "gpus a number": (grid_text(gpus=3), "gpus must be a list, not a whole number (3)"),
    "rounds as text": (grid_text(parameters={"rounds": "two"}), "parameters.rounds: rounds must be a whole number, "
                                                                 "not text ('two')"),
    "limit a float": (grid_text(parameters={"limit": 2.5}), "parameters.limit: limit must be a whole number or "
                                                             "empty (null), not a number (2.5)"),
    "old name": (grid_text(parameters={"backend": "vllm"}), "the run parameter 'backend' is now called 'engine'"),
    "invalid value": (grid_text(parameters={"rounds": 0}), "cell always_a1: rounds must be at least 1, got 0"),
    "yaml error": ("matrix: {model: [always_a1]\nparameters: x\n", "not valid YAML"),
    "not a mapping": ("- model\n- rounds\n", "a grid is a mapping of keys"),
    "empty": ("", "is empty"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_grid_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, case):
    text, message = CASES[case]
    file = tmp_path / "grid_bad.yaml"
    file.write_text(text)
    assert launch.main([str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {file}") and "Traceback" not in err, err
    assert message in err, err


def test_a_binary_file_and_a_bad_override_are_refused_the_same_way(tmp_path, capsys):
    binary = tmp_path / "grid.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert launch.main([str(binary)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a text file (byte 0x89 at offset 0 is not UTF-8)" in err
    good = tmp_path / "grid_ok.yaml"
    good.write_text(grid_text())
    assert launch.main([str(good), "-p", "seeed", "1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "-p seeed: unknown run parameter 'seeed' (did you mean 'seed'?)" in err


def test_the_shipped_grids_pass_their_own_checks():
    """grid_paper and grid_2026 said ``backend: auto``, a setting renamed to ``engine``: every
    cell would have stopped at its first line; the check found it."""
    for name in ("grid_cpu", "grid_paper", "grid_2026"):
        grid = launch.load_grid(launch.paths.params_dir() / f"{name}.yaml")
        assert grid.cells
