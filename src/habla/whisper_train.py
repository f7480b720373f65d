"""The pieces a Whisper LoRA training loop needs: adapters, batches, loss, and a checked merge.

In: a transformers `WhisperForConditionalGeneration` and `habla.whisper_data.Example`s. Out:
a peft model with LoRA on every attention projection, padded batches, the batch loss, and
`merge_checked` → the merged model plus how far its decoder logits moved from the adapter's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from habla.whisper_data import IGNORE_INDEX, Example

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from transformers import WhisperForConditionalGeneration

# Every attention projection: encoder self-attention, decoder self- and cross-attention
# (whisper-finetune.md §4: decoder-only LoRA on cached encoder outputs scored clearly worse).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05,
                targets: Sequence[str] = LORA_TARGETS) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      bias="none")


def add_lora(model: WhisperForConditionalGeneration, config: LoraConfig | None = None,
             seed: int = 0) -> PeftModel:
    """The model wrapped with fresh LoRA adapters, initialised from `seed` (reproducible)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, config or lora_config())


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack features; right-pad decoder inputs with `pad_id` and labels with IGNORE_INDEX
    (causal attention never lets a real position see the padding after it)."""
    width = max(len(e.decoder_input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :len(e.decoder_input_ids)] = torch.tensor(e.decoder_input_ids)
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
    features = torch.from_numpy(np.stack([e.input_features for e in examples]))
    return {"input_features": features, "decoder_input_ids": ids, "labels": labels}


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over the batch's label tokens, and figures for logging."""
    out = model(input_features=batch["input_features"],
                decoder_input_ids=batch["decoder_input_ids"], labels=batch["labels"])
    tokens = int((batch["labels"] != IGNORE_INDEX).sum())
    return out.loss, {"loss": float(out.loss.detach()), "tokens": tokens}


@torch.no_grad()
def decoder_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(input_features=batch["input_features"],
                   decoder_input_ids=batch["decoder_input_ids"]).logits
    model.train(was_training)
    return logits


def merge_checked(peft_model: PeftModel, batch: dict[str, torch.Tensor]
                  ) -> tuple[WhisperForConditionalGeneration, float]:
    """`merge_and_unload`, and the largest |logit| difference it caused on `batch`'s label
    positions (the adapter model before, the merged model after; ~1e-5 is float noise)."""
    before = decoder_logits(peft_model, batch)
    merged = peft_model.merge_and_unload()
    after = decoder_logits(merged, batch)
    real = batch["labels"] != IGNORE_INDEX
    return merged, float((before - after).abs()[real].max())
