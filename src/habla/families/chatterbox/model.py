"""The trainable T3: a teacher-forced forward over padded batches, the shifted masked loss,
and the word-time guide for T3's alignment heads.

In: upstream's T3 and collated batches (text ids, speech tokens, prompt tokens, speaker
embeddings, each token's word span in seconds). Out: speech/text logits and a loss. Upstream's
`T3.loss` is broken (logits not transposed, targets not shifted) and pads text in the middle of
each sequence; here each example is [conditioning, its text, its speech] with padding only at the
end, exactly what one unpadded example sees at inference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import habla.families.chatterbox.upstream as upstream
from habla.families.speecht5 import word_attention_loss

IGNORE = -100
SECONDS_PER_TOKEN = 1.0 / upstream.TOKENS_PER_SECOND
EMOTION = 0.5  # upstream's default exaggeration, used for every training example


class TrainableT3(nn.Module):
    """Upstream's T3 behind one `forward(batch)`, so peft, accelerate and DDP see one call."""

    def __init__(self, t3: nn.Module) -> None:
        super().__init__()
        self.t3 = t3

    def _conditioning(self, speaker_emb: torch.Tensor, prompt: torch.Tensor,
                      prompt_lens: torch.Tensor) -> list[torch.Tensor]:
        t3_cond = upstream.module("models.t3.modules.cond_enc").T3Cond
        out = []
        for i in range(len(speaker_emb)):
            n = int(prompt_lens[i])
            cond = t3_cond(speaker_emb=speaker_emb[i : i + 1],
                           cond_prompt_speech_tokens=prompt[i : i + 1, :n] if n else None,
                           emotion_adv=torch.full((1, 1, 1), EMOTION, device=prompt.device,
                                                  dtype=speaker_emb.dtype))
            out.append(self.t3.prepare_conditioning(cond)[0])
        return out

    def forward(self, text: torch.Tensor, text_lens: torch.Tensor, speech: torch.Tensor,
                speech_lens: torch.Tensor, prompt: torch.Tensor, prompt_lens: torch.Tensor,
                speaker_emb: torch.Tensor, output_attentions: bool = False) -> dict[str, Any]:
        t3 = self.t3
        conds = self._conditioning(speaker_emb, prompt, prompt_lens)
        text_emb = t3.text_emb(text) + t3.text_pos_emb(text)
        speech_emb = t3.speech_emb(speech) + t3.speech_pos_emb(speech)
        rows, starts = [], []
        for i, cond in enumerate(conds):
            lt, ls = int(text_lens[i]), int(speech_lens[i])
            rows.append(torch.cat([cond, text_emb[i, :lt], speech_emb[i, :ls]]))
            starts.append((len(cond), len(cond) + lt))
        length = max(len(r) for r in rows)
        embeds = text_emb.new_zeros(len(rows), length, text_emb.shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=text.device)
        for i, row in enumerate(rows):
            embeds[i, : len(row)] = row
            mask[i, : len(row)] = 1
        out = t3.tfmr(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                      output_attentions=output_attentions, return_dict=True)
        hidden = out.last_hidden_state
        text_h = hidden.new_zeros(len(rows), text.shape[1], hidden.shape[-1])
        speech_h = hidden.new_zeros(len(rows), speech.shape[1], hidden.shape[-1])
        for i, (text_at, speech_at) in enumerate(starts):
            lt, ls = int(text_lens[i]), int(speech_lens[i])
            text_h[i, :lt] = hidden[i, text_at : text_at + lt]
            speech_h[i, :ls] = hidden[i, speech_at : speech_at + ls]
        return {"text_logits": t3.text_head(text_h), "speech_logits": t3.speech_head(speech_h),
                "attentions": out.attentions if output_attentions else None, "starts": starts}


def shifted_loss(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
                 ) -> torch.Tensor:
    """Next-token cross-entropy: position j predicts token j+1; padding is ignored."""
    labels = tokens[:, 1:].clone()
    positions = torch.arange(labels.shape[1], device=tokens.device)[None]
    labels[positions >= (lengths[:, None] - 1)] = IGNORE
    return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels, ignore_index=IGNORE)


def guide_loss(out: dict[str, Any], batch: dict[str, torch.Tensor],
               heads: list[tuple[int, int]], sigma: float) -> torch.Tensor:
    """Attention mass that speech steps put, in the given (layer, head)s, on text tokens of
    words that are elsewhere in time (habla.families.speecht5.word_attention_loss, whose
    prior is each word's span from habla's timestamps)."""
    attentions = out["attentions"]
    text_lens, speech_lens = batch["text_lens"], batch["speech_lens"]
    n_text, n_speech = batch["text"].shape[1], batch["speech"].shape[1]
    maps = attentions[0].new_zeros(len(text_lens), len(heads), n_speech, n_text)
    for i, (text_at, speech_at) in enumerate(out["starts"]):
        lt, ls = int(text_lens[i]), int(speech_lens[i])
        for k, (layer, head) in enumerate(heads):
            attn = attentions[layer][i, head]
            maps[i, k, :ls, :lt] = attn[speech_at : speech_at + ls, text_at : text_at + lt]
    text_mask = torch.arange(n_text, device=maps.device)[None] < text_lens[:, None]
    # speech position j predicts token j+1, heard at [j, j+1) x 40 ms; the last predicts EOS
    step_mask = torch.arange(n_speech, device=maps.device)[None] < (speech_lens[:, None] - 1)
    return word_attention_loss((maps,), batch["token_spans"], text_mask, step_mask,
                               SECONDS_PER_TOKEN, heads=len(heads), sigma=sigma)
