"""Seeds derived from content and config, never from global random state.

>>> derive_seed(0, "generate", 1, "prompt-7", 3) == derive_seed(0, "generate", 1, "prompt-7", 3)
True
>>> derive_seed(0, "generate", 1, "prompt-7", 3) != derive_seed(1, "generate", 1, "prompt-7", 3)
True
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (the run seed, the stage, ids, sample index)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)
