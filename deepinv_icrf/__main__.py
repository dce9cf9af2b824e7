from __future__ import annotations

from deepinv_icrf.cli.app import run

run()
