"""Papermill's injected-parameters cell is folded, not removed, and nothing else changes."""

import nbformat

from opai_lib import pages


def test_fold_tags_only_the_injected_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("profile = 'smoke'",
                                          metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_markdown_cell("# text")]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    assert pages.fold_injected_parameters(path) == 1
    cells = nbformat.read(path, as_version=4).cells
    assert cells[1].metadata["tags"] == ["injected-parameters", "hide-cell"]
    assert cells[1].source == "profile = 'smoke'"
    assert cells[0].metadata["tags"] == ["parameters"]
    assert cells[2].metadata.get("tags", []) == []
    assert pages.fold_injected_parameters(path) == 0  # already folded: unchanged
