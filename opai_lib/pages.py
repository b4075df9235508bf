"""Executed notebooks as book pages.

Papermill writes the parameters it was given into a cell tagged ``injected-parameters``.
The page keeps that cell, since it says which profile and parameters produced the numbers,
but folds it (jupyter-book's ``hide-cell`` tag) so that the chapter opens with its prose.
"""

from __future__ import annotations

from pathlib import Path

import nbformat


def fold_injected_parameters(path: str | Path) -> int:
    """Tag papermill's injected-parameters cells of notebook ``path`` ``hide-cell``, in
    place; returns how many cells were folded."""
    nb = nbformat.read(path, as_version=4)
    folded = 0
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
            folded += 1
    if folded:
        nbformat.write(nb, path)
    return folded
