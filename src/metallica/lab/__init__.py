"""The fault lab: the brief's network failures as scenarios, and the invariant checker."""

from __future__ import annotations
