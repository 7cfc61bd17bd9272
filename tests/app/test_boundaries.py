"""app/ is the API image: it never imports torch or worker/ (it asks for work by name)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_app_modules_import_neither_torch_nor_worker() -> None:
    # The CLI is the one exception: its commands import the worker lazily, inside functions.
    offenders = {}
    for path in APP.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = set()
        for node in top_level:
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif node.module:
                names.add(node.module.split(".")[0])
        bad = names & {"torch", "torchvision", "worker"}
        if path.name != "cli.py":
            bad |= imported_roots(path) & {"torch", "torchvision", "worker"}
        if bad:
            offenders[str(path.relative_to(APP))] = sorted(bad)
    assert offenders == {}


def test_service_starts_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fastapi.testclient import TestClient\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        f"s = Settings(data_dir={str(tmp_path)!r}, embedded_scheduler=True)\n"
        "from app import migrate; migrate.upgrade(s.resolved_database_url)\n"
        "from app.bootstrap import ensure_initial_version, ml_available\n"
        "from app.database import make_engine, make_session_factory\n"
        "e = make_engine(s.resolved_database_url)\n"
        "ensure_initial_version(make_session_factory(e), s, placeholder=True)\n"
        "with TestClient(create_app(s)) as c:\n"
        "    r = c.post('/v1/impressions', json={'placement': 'background'})\n"
        "    assert r.status_code == 201, r.text\n"
        "print('ok', ml_available(), 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok False False"
