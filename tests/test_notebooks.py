"""Every notebook runs on the smoke profile, and the book builds from the results."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """A copy of book/ whose notebooks are executed on demand, on the smoke profile."""
    out = tmp_path_factory.mktemp("book")
    shutil.copytree(ROOT / "book", out, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("_build", "*.ipynb"))
    return out


def execute(source: Path, book: Path, **parameters) -> Path:
    out = book / f"{source.stem}.ipynb"
    if not out.exists() or parameters:
        nbformat.write(jupytext.read(source), out)
        # No output path while it runs: papermill would rewrite the whole notebook after
        # every cell (1-2 s of a large chapter's smoke run); it is written once at the end.
        try:
            done = papermill.execute_notebook(out, None, cwd=str(book), kernel_name="python3",
                                              parameters={"profile": "smoke", **parameters},
                                              progress_bar=False)
        except BaseException:
            out.unlink()  # no unexecuted copy for a later test to take as executed
            raise
        nbformat.write(done, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_smoke_profile(source, smoke_book):
    nb = nbformat.read(execute(source, smoke_book), as_version=4)
    assert any(c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])
               for c in nb.cells), "a notebook needs a `parameters` cell for papermill"
    # a cell's last expression is printed: a glue helper's return value would reach the page
    leaked = [c.source.splitlines()[-1] for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "execute_result"
              and not {"text/html", "image/png", "text/markdown"} & set(o["data"])]
    assert not leaked, f"cells print a bare value (end them with a table or a figure): {leaked}"


@pytest.mark.slow
def test_bad_notebook_parameter_fails_before_compute(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError,
                       match="sparsity = '0.9'; allowed: float"):
        execute(ROOT / "notebooks" / "machinery.py", tmp_path, sparsity="0.9")
    with pytest.raises(papermill.PapermillExecutionError, match="unknown profile 'gpu'"):
        execute(ROOT / "notebooks" / "machinery.py", tmp_path, profile="gpu")
    with pytest.raises(papermill.PapermillExecutionError,
                       match=r"seeds = \[1.5\]; allowed: None or a list of int"):
        execute(ROOT / "notebooks" / "machinery.py", tmp_path, seeds=[1.5])


def test_every_notebook_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    files |= {s["file"] for part in toc["parts"] for c in part["chapters"]
              for s in c.get("sections", [])}
    assert {p.stem for p in NOTEBOOKS} <= files


@pytest.mark.slow
def test_book_builds_offline_without_warnings(smoke_book):
    for source in NOTEBOOKS:
        execute(source, smoke_book)
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(smoke_book), "--config", str(ROOT / "_config.yml"),
                    "--toc", str(smoke_book / "_toc.yml"), "-W", "--keep-going", "-q"],
                   check=True, timeout=600)
    html = smoke_book / "_build" / "html"
    page = (html / "intro.html").read_text()  # a page with formulas
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "_static/outputs.css" in page  # printed lines wrap instead of running off the page
    assert "pre-wrap" in (html / "_static" / "outputs.css").read_text()


def _tree(folder: Path) -> dict[str, str]:
    """Hashes of the files under ``folder`` but its HTML build and run checkpoints."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "_build" not in p.parts and p.suffix != ".ckpt"}


@pytest.mark.slow
def test_a_rerun_goes_beside_the_book_and_its_prose_follows_its_parameter(tmp_path):
    """The documented re-run (``make nb``) leaves every file of book/ as it was, and the
    numbers its prose quotes are the new parameter's, glued from the run."""
    before = _tree(ROOT / "book")
    subprocess.run(["make", "nb", "NB=criteria_layer_densities", "PROFILE=smoke",
                    f"OUT={tmp_path}", "PARAMS=-p sparsity 0.99"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    after = _tree(ROOT / "book")
    assert not [f for f in before.keys() & after.keys() if before[f] != after[f]]
    # a sweep running beside the tests may add records to the published stores; nothing else
    assert not [f for f in before.keys() ^ after.keys() if not f.startswith("record/cpu/")]
    nb = nbformat.read(tmp_path / "criteria_layer_densities.ipynb", as_version=4)
    glued = {o.metadata["scrapbook"]["name"]: o.data["application/papermill.record/text/plain"]
             for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "scrapbook" in o.get("metadata", {})}
    assert float(glued["cld_sparsity"]) == pytest.approx(99)
    assert float(glued["cld_density"]) == pytest.approx(1)
