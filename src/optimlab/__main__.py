"""`python -m optimlab ...` (also what `torchrun -m optimlab train ...` runs)."""

import sys

from optimlab.cli import main

sys.exit(main())
