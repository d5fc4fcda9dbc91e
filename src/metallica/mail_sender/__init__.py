"""mail-sender: "sends" a mail by writing it into a Maildir; repeats of a key write nothing."""

from __future__ import annotations
