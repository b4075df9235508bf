"""Notebook parameters: declared once, in the ``parameters`` cell, checked before any compute.

Each line of a notebook's ``parameters`` cell declares one parameter, its type, its default
and, in its comment, its meaning::

    from typing import Optional

    seeds: Optional[int] = None  # seeds of every cell; None: 3 (smoke: 1)

(``Optional[int]`` rather than ``int | None``: papermill's own reading of the cell, behind
``--help-notebook`` and its "unknown parameter" warning, skips a ``|``, nteract/papermill#695.)
The next cell calls ``check(globals())`` before anything else that reads a parameter: a name
papermill injected that the cell does not declare is an error listing the declared ones, and
every declared parameter must hold a value of its type (``config.matches``). Checks that
need the library (a model in the registry, a sparsity in (0, 1)) follow in the notebook.

``table`` writes every notebook's parameters as the Markdown table of ``book/reproduce.md``.
"""

from __future__ import annotations

import ast
import io
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from opai_lib import config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The first line of the cell papermill injects after the parameters cell (its comment).
INJECTED = "# Parameters\n"
BEGIN = ("% Generated from each notebook's parameters cell by "
         "`python -m opai_lib params --write book/reproduce.md`: edit the cells, not the table.")
END = "% End of the generated table."


def injected(namespace: dict) -> list[str]:
    """The names papermill assigned in this kernel: the targets of its injected cell, found
    in IPython's input history ``In`` (the kernel does not see cell tags); none outside
    IPython or when nothing was injected."""
    cells = [c for c in namespace.get("In", ()) if c.startswith(INJECTED)]
    return [t.id for c in cells for node in ast.parse(c).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)]


def describe(kind) -> str:
    """An annotation in words, for an error message: 'int', 'None or a list of float'."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kinds = sorted(typing.get_args(kind), key=lambda k: k is not type(None))
        return " or ".join(describe(k) for k in kinds)
    if typing.get_origin(kind) is list:
        return f"a list of {describe(typing.get_args(kind)[0])}"
    return "None" if kind is type(None) else kind.__name__


def allowed(name: str, kind) -> str:
    """What parameter ``name`` of type ``kind`` allows; where a list, how to pass one."""
    words = describe(kind)
    return f"{words} (a list goes with -y: -y '{{{name}: [...]}}')" if "a list" in words else words


def check(namespace: dict) -> None:
    """Check a notebook's parameters in ``namespace`` (its ``globals()``) against its
    parameters cell, whose annotations the kernel keeps in ``__annotations__``: an injected
    name the cell does not declare, or a value not of its declared type, is a ValueError
    naming it and what is allowed."""
    annotations = namespace.get("__annotations__", {})
    unknown = sorted(set(injected(namespace)) - set(annotations))
    if unknown:
        known = ", ".join(f"{n} ({describe(k)})" for n, k in annotations.items())
        raise ValueError(f"unknown parameter(s) {unknown}; this notebook's parameters are: "
                         f"{known or 'none'}")
    for name, kind in annotations.items():
        value = namespace[name]
        config.check_parameter(config.matches(value, kind), name, value, allowed(name, kind))


@dataclass(frozen=True)
class Parameter:
    """One parameter as its notebook's parameters cell declares it: type and default as
    source text on one line, meaning as its comment says."""

    name: str
    annotation: str
    default: str
    meaning: str


def parameters_cell(path: Path) -> str:
    """The source of the code cell tagged ``parameters`` of notebook ``path`` (jupytext's
    ``.py`` or an ``.ipynb``)."""
    import jupytext  # not at the top: the kernels that only ``check`` need not load it

    cells = [c.source for c in jupytext.read(path).cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: {len(cells)} code cells tagged 'parameters'; one is needed")
    return cells[0]


def declared(path: Path) -> list[Parameter]:
    """The parameters notebook ``path`` declares. Every statement of its parameters cell must
    be ``name: type = default  # meaning`` or an import from ``typing`` for the types."""
    cell = parameters_cell(path)
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(cell).readline)
                if t.type == tokenize.COMMENT}
    found = []
    for node in ast.parse(cell).body:
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            continue
        meaning = " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1)
                           if n in comments)
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.value is not None and meaning):
            raise ValueError(f"{path}: {ast.get_source_segment(cell, node)!r} in the parameters "
                             "cell; each line must read `name: type = default  # meaning`")
        found.append(Parameter(node.target.id, ast.unparse(node.annotation),
                               ast.unparse(node.value), meaning))
    return found


def table(paths: list[Path] | None = None) -> str:
    """Every parameter of notebooks ``paths`` (default: all of ``notebooks/``) as a Markdown
    table: notebook, parameter, type, default and meaning, one row each."""
    rows = ["| notebook | parameter | type | default | meaning |",
            "| --- | --- | --- | --- | --- |"]
    for path in sorted(paths or NOTEBOOKS.glob("*.py")):
        for i, p in enumerate(declared(path)):
            cells = [f"`{path.stem}`" if i == 0 else "", f"`{p.name}`", f"`{p.annotation}`",
                     f"`{p.default}`", p.meaning]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def with_table(text: str, generated: str) -> str:
    """``text`` with the lines between its ``BEGIN`` and ``END`` markers replaced by
    ``generated``; a ValueError when a marker is missing."""
    head, begin, rest = text.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise ValueError(f"no generated table: the lines {BEGIN!r} and {END!r} are missing")
    return head + begin + generated + end + tail
