"""Fixtures shared by the protocol tests."""

import pytest

from paper_runs import register_random_openai_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random zipfast-tiny checkpoint file (the "openai" weights the protocols' runs load)."""
    mp = pytest.MonkeyPatch()
    path = register_random_openai_weights(mp, tmp_path_factory.mktemp("weights"))
    mp.undo()
    return path
