"""A minimal host app for `flask --app tests.host_app jobs ...` in tests/test_host_extension.py."""

from __future__ import annotations

from flask import Flask

from routes.extension import FikiriJobs

app = Flask("host_app_for_cli")
app.config.from_prefixed_env()
FikiriJobs(app, dashboard=False)
