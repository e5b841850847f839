"""Allow `python -m vdtrain ...` and `accelerate launch -m vdtrain train ...`."""

import sys

from vdtrain.cli import main

sys.exit(main())
