"""phase2: from phase 1's result, LoRA extended to the rest of the model (habla.adapt, phase 2).

In: models/phase1 (and what phase 1 read). Out: models/phase2/ with the whole adapter chain
(so merge needs only this folder), checkpoints/phase2/, dvclive/phase2/, metrics/phase2.json.
"""

from __future__ import annotations

from typing import Any

from habla.adapt import adapt
from habla.config import Params

# train.processes > 1: habla.runner starts this stage under `accelerate launch`
DISTRIBUTED = True


def run(params: Params) -> dict[str, Any]:
    return adapt(params, phase=2)
