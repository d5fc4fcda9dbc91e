"""password-generator: one password per username, ever; repeats of a key get the first answer."""

from __future__ import annotations
