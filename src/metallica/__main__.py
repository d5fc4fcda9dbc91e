"""``python -m metallica``: the CLI."""

from __future__ import annotations

from metallica.cli import main

if __name__ == "__main__":
    main()
