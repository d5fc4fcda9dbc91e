"""``python -m metallica.cli``: the ``metallica`` command."""

from __future__ import annotations

from metallica.cli import main

main()
