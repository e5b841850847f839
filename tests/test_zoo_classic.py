"""The model zoo's families of tests/zoo_classic.py under exactly the assertions of tests/test_zoo.py (and, where
vanilla TRL trains them, of tests/test_zoo_sft.py)."""

from __future__ import annotations

import pytest
import zoo_classic
from test_zoo import check_family


@pytest.mark.parametrize("family", zoo_classic.FAMILIES)
def test_family(family, tmp_path):
    model, processor = zoo_classic.build(family)
    check_family(family, model, processor, tmp_path)
