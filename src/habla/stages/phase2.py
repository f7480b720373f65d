"""LoRA phase 2: merge phase 1 in memory, then a new adapter that reaches the decoder/postnet.

In: models/phase1 (and what phase 1 read). Out: models/phase2/ with the whole adapter chain
(so merge needs only this folder), checkpoints/phase2/, dvclive/phase2/, metrics/phase2.json.
"""

from __future__ import annotations

from typing import Any

from habla.config import Params
from habla.stages.phase1 import adapt


def run(params: Params) -> dict[str, Any]:
    return adapt(params, phase=2)
