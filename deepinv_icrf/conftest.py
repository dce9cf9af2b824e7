from __future__ import annotations

import tempfile

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_seed():
    """Seed every doctest so printed values are reproducible."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _doctest_tempdir(tmp_path, monkeypatch):
    """Make ``tempfile.mkdtemp()`` in a doctest create its folder inside ``tmp_path``.

    ``tempfile.tempdir`` is restored after the doctest, so the folders the examples create
    live in pytest's managed (and pruned) temporary directory instead of piling up in /tmp.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
