"""snapshot-agent: diagnostic snapshots of Apache Iggy nodes."""

from __future__ import annotations

__version__ = "0.1.0"
