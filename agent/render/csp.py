"""The page's Content-Security-Policy: no network at all, only its own inline blocks run."""

from __future__ import annotations

import base64
import hashlib


def source_hash(text: str) -> str:
    """The CSP source expression of an inline block with exactly this content."""
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def policy(script: str, style: str) -> str:
    """The policy allowing the one inline script and style block, data: images, nothing else."""
    return (
        f"default-src 'none'; script-src {source_hash(script)}; "
        f"style-src {source_hash(style)}; img-src data:; base-uri 'none'; form-action 'none'"
    )
