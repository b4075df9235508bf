"""Numbers glued into the book's prose."""

import myst_nb
import numpy as np

from opai_lib import plots


def test_glued_numbers_are_plain_python_numbers(monkeypatch):
    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: glued.update({key: value}))
    assert plots.glue_number("a", np.float64(0.25)) == 0.25
    assert plots.glue_number("b", np.int64(3)) == 3
    assert type(glued["a"]) is float and type(glued["b"]) is int
    assert repr(glued["a"]) == "0.25"  # what myst-nb parses back to format it
