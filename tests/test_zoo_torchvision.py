"""The model zoo's families whose processors need torchvision (tests/zoo_torchvision.py), under exactly the
assertions of tests/test_zoo.py: the supervised span decodes to the answers plus one flagged end-of-turn token each,
tau = 0 logs the vanilla `Trainer`'s losses, and `d` is not 0 on image rows.

Marked `torchvision`: the main CI venv (CPU torch 2.13, where PyPI's torchvision does not import) deselects them
(`-m "not torchvision"`); scripts/ci_torchvision.sh runs them (`-m torchvision`) in a venv with torch + torchvision.
"""

from __future__ import annotations

import pytest
import zoo_torchvision
from test_zoo import check_family

pytestmark = pytest.mark.torchvision


@pytest.mark.parametrize("family", zoo_torchvision.FAMILIES)
def test_family(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_torchvision.build(family)
    check_family(family, model, processor, tmp_path)
