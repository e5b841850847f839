"""The zoo's families of group tvb (tests/zoo_tvb.py: image processors that exist only as torchvision classes, timm
vision towers), under exactly the assertions of tests/test_zoo.py and, where vanilla TRL trains the family, of
tests/test_zoo_sft.py.

Marked `torchvision`: the main CI venv deselects them; scripts/ci_torchvision.sh runs them in its torchvision venv.
"""

from __future__ import annotations

import pytest
import zoo_torchvision
import zoo_tvb
from test_zoo import check_family

pytestmark = pytest.mark.torchvision


def test_every_family_is_classified():
    """Each family of the group is in the zoo or in LEFT with its reason, never both."""
    assert not set(zoo_tvb.FAMILIES) & set(zoo_tvb.LEFT)
    assert all(reason.strip() for reason in zoo_tvb.LEFT.values())


@pytest.mark.parametrize("family", zoo_tvb.FAMILIES)
def test_family(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tvb.build(family)
    check_family(family, model, processor, tmp_path)
