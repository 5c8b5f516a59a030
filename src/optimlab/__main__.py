"""`python -m optimlab ...` (also what `torchrun -m optimlab train ...` runs)."""

from optimlab.cli import entry

entry()
