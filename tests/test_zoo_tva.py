"""Zoo group `tva` (tests/zoo_tva.py): families new in transformers 5.25 whose image processors need torchvision,
under exactly the assertions of tests/test_zoo.py (`check_family`) and, where vanilla TRL trains them, of
tests/test_zoo_sft.py (`check_sft_family`). Marked `torchvision`: scripts/ci_torchvision.sh runs them.
"""

from __future__ import annotations

import pytest
import zoo_torchvision
import zoo_tva
from test_zoo import check_family

pytestmark = pytest.mark.torchvision


def test_every_family_is_classified():
    """Every family of the group is in the zoo or left out with a reason, never both."""
    group = [
        "apertus1p5",
        "gemma4_unified",
        "inkling2",
        "inkling2_loop",
        "inkling_mm_model",
        "muse_glimmer",
        "muse_spark",
    ]
    assert sorted([*zoo_tva.FAMILIES, *zoo_tva.LEFT]) == sorted(group)
    assert all(reason for reason in zoo_tva.LEFT.values())


@pytest.mark.parametrize("family", zoo_tva.FAMILIES)
def test_family(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tva.build(family)
    check_family(family, model, processor, tmp_path)
