from __future__ import annotations

import sys

from deepinv_icrf.cli import main

sys.exit(main())
