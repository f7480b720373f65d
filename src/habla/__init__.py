"""habla: reproducible speech-model fine-tuning as one DVC pipeline."""

import os

# On small shared CPU boxes OpenMP threads busy-wait: a tiny training step went from 0.7 s
# to 14-19 s with two spinning threads (field notes). Must be set before torch is imported;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
