"""One module per pipeline stage; each exposes `run(params) -> summary dict`.

Stages talk only through files on disk (manifests, audio, models): a stage module never
imports another stage module.
"""

STAGES = (
    "download",
    "segment",
    "transcribe",
    "timestamps",
    "tokenize",
    "phase1",
    "phase2",
    "merge",
    "evaluate",
)
