"""Create the database tables: ``python -m scripts.init_db`` (uses DATABASE_URL)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import get_settings  # noqa: E402
from core.platform.db import init_db  # noqa: E402

if __name__ == "__main__":
    init_db()
    print(f"tables ready in {get_settings().database_url}")
