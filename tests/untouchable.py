"""Batches that fail a test when anything reads them: proof that arguments are checked
before any compute."""


class Untouchable:
    """Batches that fail the test when anything reads them."""

    def __len__(self):
        return 10

    def __iter__(self):
        raise AssertionError("computed before checking the arguments")
