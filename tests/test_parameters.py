"""Notebook parameters: declared in the parameters cell, checked in the next, listed in the book."""

import ast
import re
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from opai_lib import config, parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
CALL = "parameters.check(globals())"


@pytest.mark.parametrize("value, kind, ok", [
    ([0.9, 0.95], list[float], True), ((0.9, 1), list[float], True), (0.95, list[float], False),
    ([0.9, "x"], list[float], False), ([True], list[float], False), (3, list[int] | None, False),
    (None, list[int] | None, True), (2, float, True), (True, int, False), ("3", int, False),
    (["images"], list[str], True)])
def test_matches_reads_list_annotations(value, kind, ok):
    assert config.matches(value, kind) is ok


def namespace(injected: str = "", **values) -> dict:
    """A kernel's globals after a parameters cell declaring ``seed: int`` and
    ``sparsities: list[float] | None`` and papermill's cell injecting ``injected``."""
    return {"__annotations__": {"seed": int, "sparsities": list[float] | None},
            "In": ["", "seed: int = 0\nsparsities: list[float] | None = None",
                   parameters.INJECTED + injected, CALL],
            "seed": 0, "sparsities": None, **values}


def test_check_passes_declared_values_of_their_type():
    parameters.check(namespace("seed = 3\nsparsities = [0.9, 0.95]", seed=3,
                               sparsities=[0.9, 0.95]))
    parameters.check({"__annotations__": {"seed": int}, "seed": 0})  # outside IPython


@pytest.mark.parametrize("values, message", [
    ({"seed": "x"}, "seed = 'x'; allowed: int"),
    ({"seed": 1.0}, "seed = 1.0; allowed: int"),
    ({"sparsities": 0.95}, "sparsities = 0.95; allowed: None or a list of float (a list goes "
                           "with -y: -y '{sparsities: [...]}')")])
def test_check_names_a_wrong_type_and_what_is_allowed(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parameters.check(namespace(**values))


def test_check_refuses_an_injected_name_the_cell_does_not_declare():
    ns = namespace("sparsty = 0.5\nseed = 2", sparsty=0.5, seed=2)
    with pytest.raises(ValueError, match=re.escape(
            "unknown parameter(s) ['sparsty']; this notebook's parameters are: seed (int), "
            "sparsities (None or a list of float)")):
        parameters.check(ns)
    ordinary = namespace(plt=None, rows=[1])  # names of the notebook's cells, not injected
    parameters.check(ordinary)


def write(path: Path, cell: str) -> Path:
    path.write_text(f'# %% [markdown]\n# A page.\n\n# %% tags=["parameters"]\n{cell}\n'
                    f'# %%\nfrom opai_lib import parameters\n\n{CALL}\n')
    return path


def test_declared_reads_names_types_defaults_and_meanings(tmp_path):
    found = parameters.declared(write(tmp_path / "page.py", (
        "from typing import Optional\n\n"
        "seeds: Optional[int] = None  # seeds of every cell; None: 3\n"
        "fractions: list[float] = [0.1,\n"
        "                          0.2]  # fractions pruned\n")))
    assert found == [parameters.Parameter("seeds", "Optional[int]", "None",
                                           "seeds of every cell; None: 3"),
                     parameters.Parameter("fractions", "list[float]", "[0.1, 0.2]",
                                          "fractions pruned")]


@pytest.mark.parametrize("cell", ["seed = 0  # no type", "seed: int = 0", "import torch",
                                  "seed: int  # no default"])
def test_declared_refuses_a_line_that_is_not_one_parameter(tmp_path, cell):
    with pytest.raises(ValueError, match="must read `name: type = default  # meaning`"):
        parameters.declared(write(tmp_path / "page.py", cell))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters_first(source):
    """The cell after the parameters cell calls ``check`` before any statement but imports."""
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    parameters.declared(source)  # every line of the parameters cell is one parameter
    body = ast.parse(cells[index + 1].source).body
    calls = [i for i, node in enumerate(body) if ast.unparse(node) == CALL]
    assert calls and all(isinstance(node, ast.Import | ast.ImportFrom)
                         for node in body[:calls[0]]), f"{source.stem} must start with {CALL}"


def test_reproduce_lists_every_parameter_as_generated():
    text = (ROOT / "book" / "reproduce.md").read_text()
    assert parameters.with_table(text, parameters.table()) == text, (
        "book/reproduce.md's parameter table differs from the notebooks' parameters cells: run "
        "`python -m opai_lib params --write book/reproduce.md`")


def test_with_table_needs_its_markers():
    with pytest.raises(ValueError, match="no generated table"):
        parameters.with_table("# A page without the table\n", "| a |\n")


def first_cells(name: str, folder: Path) -> Path:
    """Notebook ``name``'s parameters cell and its check, without the rest of its first cell
    (which computes), then a cell printing every parameter: a seconds-long run through
    papermill of what the real notebook does before any compute."""
    cells = [c for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells
             if "parameters" in c.metadata.get("tags", [])]
    names = ", ".join(p.name for p in parameters.declared(ROOT / "notebooks" / f"{name}.py"))
    nb = nbformat.v4.new_notebook(cells=cells + [
        nbformat.v4.new_code_cell(f"from opai_lib import parameters\n\n{CALL}"),
        nbformat.v4.new_code_cell(f"print({names})")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def run(path: Path, **values) -> nbformat.NotebookNode:
    papermill.execute_notebook(path, path, parameters=values, cwd=str(path.parent),
                               kernel_name="python3", progress_bar=False)
    return nbformat.read(path, as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize("name, values, message", [
    ("criteria_layer_densities", {"seed": "x"}, "seed = 'x'; allowed: int"),
    ("machinery", {"seeds": 3}, "seeds = 3; allowed: None or a list of int"),
    ("ablations", {"sparsities": 0.95}, "sparsities = 0.95; allowed: None or a list of float"),
    ("machinery", {"sparsty": 0.5}, "unknown parameter(s) ['sparsty']; this notebook's "
     "parameters are: profile (str), model_name (str), sparsity (float), seeds (None or a "
     "list of int)")])
def test_a_bad_parameter_stops_at_the_check(tmp_path, name, values, message):
    with pytest.raises(papermill.PapermillExecutionError, match=re.escape(message)) as error:
        run(first_cells(name, tmp_path), **values)
    assert error.value.exec_count == 3  # parameters, papermill's cell, then the check


@pytest.mark.slow
def test_good_parameters_pass_the_check(tmp_path):
    nb = run(first_cells("ablations", tmp_path), seeds=2, sparsities=[0.9, 0.95], compute=False)
    assert nb.cells[-1].outputs[0]["text"] == "cpu resnet20 2 None [0.9, 0.95] False None\n"


@pytest.mark.slow
def test_a_real_notebook_stops_in_its_first_cell(tmp_path):
    """The chapter itself, not a copy of its first cells: an unknown name stops the cell
    after papermill's, before anything reads the store."""
    path = tmp_path / "conclusions.ipynb"
    nbformat.write(jupytext.read(ROOT / "notebooks" / "conclusions.py"), path)
    with pytest.raises(papermill.PapermillExecutionError,
                       match=re.escape("unknown parameter(s) ['model']")) as error:
        run(path, profile="smoke", model="resnet32")
    assert error.value.exec_count == 3
