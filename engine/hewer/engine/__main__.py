"""``python -m hewer.engine``: the ``hewer`` command."""

from __future__ import annotations

from hewer.engine.cli import main

raise SystemExit(main())
