"""phase1: LoRA on the text side of the base (habla.adapt, phase 1).

In: `model.base` (never written to), models/tokenizer, data/splits/{train,val}.jsonl.
Out: models/phase1/ (adapter, tokenizer, habla.json), checkpoints/phase1/<run key>/,
dvclive/phase1/ and metrics/phase1.json.
"""

from __future__ import annotations

from typing import Any

from habla.adapt import adapt
from habla.config import Params

# train.processes > 1: habla.runner starts this stage under `accelerate launch`
DISTRIBUTED = True


def run(params: Params) -> dict[str, Any]:
    return adapt(params, phase=1)
