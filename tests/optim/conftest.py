import sys
from pathlib import Path

# Makes `optimizers_under_test` (the shared registry of optimizers under test) importable.
sys.path.insert(0, str(Path(__file__).parent))
