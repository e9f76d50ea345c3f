"""``python -m haive.dataflow.cli``: the ``haive`` command."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
