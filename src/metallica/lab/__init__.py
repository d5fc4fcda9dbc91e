"""The fault lab: the brief's network failures and overload as scenarios against a stack to
break, each ending with the invariant checker (:mod:`metallica.load.checker`)."""

from __future__ import annotations
