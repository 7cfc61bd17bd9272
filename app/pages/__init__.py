"""People-facing HTML pages: the rating page, the embed demo, the admin dashboard. Templates
are Jinja2 with autoescaping; scripts and styles are files under app/static (no inline script,
as the Content-Security-Policy in app/security.py demands)."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

PACKAGE = Path(__file__).resolve().parent.parent
STATIC_DIR = PACKAGE / "static"
templates = Jinja2Templates(directory=PACKAGE / "templates")
