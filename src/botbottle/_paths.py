"""Where the project's files are, and making the collection's module_utils importable.

The ``botbottle`` package re-uses the collection's pure logic (the egress policy
compiler lives in ``module_utils`` because modules on managed hosts need it too)
instead of copying it. The package is installed editable from a checkout
(``pip install -e .``), so the checkout is found relative to this file;
``BOTTLE_PROJECT_DIR`` overrides that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_DIR = Path(os.environ.get("BOTTLE_PROJECT_DIR") or Path(__file__).resolve().parents[2])
COLLECTIONS_DIR = PROJECT_DIR / "collections"
SCHEMA_FILE = PROJECT_DIR / "schemas" / "bottle.schema.json"

if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.append(str(COLLECTIONS_DIR))
