"""The Flask app serving Fikiri Jobs: ``gunicorn 'app:create_app()'``.

A host application mounts the same parts into its own app with the extension instead
(``from routes.extension import FikiriJobs; FikiriJobs(host_app)``); this factory is what the
demo, the tests and a standalone deployment run, and it is a thin user of that extension.
"""

from __future__ import annotations

import logging

from flask import Flask

from core.config import get_settings
from routes.extension import FikiriJobs

logger = logging.getLogger(__name__)


def create_app() -> Flask:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    app = Flask(__name__)
    # Standalone, every path is ours: the body limit applies app-wide, not only under our prefixes.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.secret_key:
        app.config["SECRET_KEY"] = settings.secret_key
    FikiriJobs(app)
    return app
