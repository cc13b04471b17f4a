from __future__ import annotations

import sys
from pathlib import Path

# The bench tests' real server (`distinfer serve --bare`, synthetic engine) is shared with these tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
