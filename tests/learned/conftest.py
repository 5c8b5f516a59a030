import sys
from pathlib import Path

# Makes the shared settings of test_learned_metatrain importable from the other test files.
sys.path.insert(0, str(Path(__file__).parent))
