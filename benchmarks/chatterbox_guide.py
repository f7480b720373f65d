"""Two questions about the chatterbox family, on a small T3 trained on CPU (random init):

1. Does the word-time guide help? A small T3 is trained on eSpeak clips with and without
   the guide on two heads; scored on held-out clips by the teacher-forced speech-token loss
   and by how often a speech step's strongest text attention falls inside the word being
   heard, in the guided heads and in the unguided ones.
2. Which text side for phase 1? A base trained on voice A is adapted to voice B with LoRA:
   phase 1 (text modules + attention LoRA, text modules + LoRA on the lower layers'
   projections, or no phase 1) then the same phase 2 (every projection); scored by B's
   held-out speech-token loss.

Speech tokens here are not S3 tokens (a random S3Tokenizer gives nearly one code): each 40 ms
frame's log-mel is projected on 8 fixed random directions and each cut into 3 levels (3^8 =
6561 codes), so tokens follow the audio. Out: JSON lines. Run:
`OMP_WAIT_POLICY=PASSIVE python benchmarks/chatterbox_guide.py [--steps 300] [--seeds 1 2]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from habla.audio import resample  # noqa: E402
from habla.families.chatterbox import ATTENTION, PROJECTIONS, TEXT_MODULES, upstream  # noqa: E402
from habla.families.chatterbox.model import TrainableT3, guide_loss, shifted_loss  # noqa: E402
from habla.families.chatterbox.text import GraphemeText, prepare  # noqa: E402
from habla.families.speecht5 import word_token_spans  # noqa: E402
from habla.features import FeatureSpec, log_mel  # noqa: E402
from habla.sources.espeak import Espeak  # noqa: E402
from habla.sources.sentences import sentence  # noqa: E402

SPEC = FeatureSpec(sample_rate=16000, n_fft=640, hop_length=640, win_length=640, n_mels=40)
SIZES = {"t3": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 32}}
GUIDED = [(2, 0), (3, 0)]


def tokens_of(wave16: np.ndarray) -> torch.Tensor:
    mel = log_mel(wave16, SPEC).numpy()  # 25 frames/s
    directions = np.random.default_rng(0).standard_normal((mel.shape[1], 8))
    z = (mel - mel.mean(0)) @ directions
    levels = np.digitize(z, [-0.4 * z.std(), 0.4 * z.std()])  # 0, 1, 2
    return torch.from_numpy((levels * 3 ** np.arange(8)).sum(1)).long()


def corpus(voice: str, first: int, n: int, text: GraphemeText) -> list[dict]:
    tts = Espeak(seed=0)
    out = []
    for i in range(first, first + n):
        words_text = sentence(i)
        wave, starts = tts.synthesize(words_text, voice)
        wave16 = resample(wave, tts.sample_rate, 16000).astype(np.float32)
        duration = len(wave16) / 16000
        words = [{"word": w, "start": s, "end": (starts[k + 1][1] if k + 1 < len(starts)
                                                  else duration)}
                 for k, (w, s) in enumerate(starts)]
        ids, owners = text.encode(prepare(words_text), [w["word"] for w in words])
        tokens = tokens_of(wave16)
        out.append({"text": torch.tensor(ids), "owners": owners, "words": words,
                    "speech": torch.cat([torch.tensor([6561]), tokens, torch.tensor([6562])]),
                    "spans": torch.from_numpy(word_token_spans(owners, words, len(tokens) / 25))})
    for k, ex in enumerate(out):  # prompt: the next clip of the same voice
        ex["prompt"] = out[(k + 1) % len(out)]["speech"][1:151]
    return out


def collate(examples: list[dict], speaker: torch.Tensor) -> dict:
    n = len(examples)
    lt, ls = max(len(e["text"]) for e in examples), max(len(e["speech"]) for e in examples)
    lp = max(len(e["prompt"]) for e in examples)
    b = {"text": torch.zeros(n, lt, dtype=torch.long),
         "speech": torch.zeros(n, ls, dtype=torch.long),
         "prompt": torch.zeros(n, lp, dtype=torch.long), "token_spans": torch.zeros(n, lt, 2),
         "text_lens": torch.tensor([len(e["text"]) for e in examples]),
         "speech_lens": torch.tensor([len(e["speech"]) for e in examples]),
         "prompt_lens": torch.tensor([len(e["prompt"]) for e in examples]),
         "speaker_emb": speaker.expand(n, -1)}
    for i, e in enumerate(examples):
        b["text"][i, : len(e["text"])] = e["text"]
        b["speech"][i, : len(e["speech"])] = e["speech"]
        b["prompt"][i, : len(e["prompt"])] = e["prompt"]
        b["token_spans"][i, : len(e["text"])] = e["spans"]
    return b


def forward(model, batch, attentions=False):
    return model(**{k: v for k, v in batch.items() if k != "token_spans"},
                 output_attentions=attentions)


def train(model, data, speaker, steps, seed, guide=0.0, lr=1e-3):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        batch = collate([data[i] for i in rng.choice(len(data), 8, replace=False)], speaker)
        out = forward(model, batch, attentions=guide > 0)
        loss = shifted_loss(out["speech_logits"], batch["speech"], batch["speech_lens"])
        loss = loss + shifted_loss(out["text_logits"], batch["text"], batch["text_lens"])
        if guide > 0:
            loss = loss + guide * guide_loss(out, batch, GUIDED, 0.15)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


@torch.no_grad()
def score(model, data, speaker) -> dict:
    model.eval()
    losses, hits = [], {}
    for k in range(0, len(data), 8):
        chunk = data[k : k + 8]
        batch = collate(chunk, speaker)
        out = forward(model, batch, attentions=True)
        losses.append(float(shifted_loss(out["speech_logits"], batch["speech"],
                                         batch["speech_lens"])) * len(chunk))
        for i, ex in enumerate(chunk):
            text_at, speech_at = out["starts"][i]
            lt, ls = len(ex["text"]), len(ex["speech"])
            for layer, attn in enumerate(out["attentions"]):
                for head in range(attn.shape[1]):
                    a = attn[i, head, speech_at : speech_at + ls - 1, text_at : text_at + lt]
                    best = a.argmax(-1)
                    for j in range(ls - 1):
                        t = (j + 0.5) / 25
                        word = next((w for w, x in enumerate(ex["words"])
                                     if x["start"] <= t < x["end"]), None)
                        if word is None:
                            continue
                        h = hits.setdefault((layer, head), [0, 0])
                        h[0] += ex["owners"][int(best[j])] == word
                        h[1] += 1
    acc = {f"{ly}.{h}": round(a / max(n, 1), 3) for (ly, h), (a, n) in sorted(hits.items())}
    guided = [acc[f"{ly}.{h}"] for ly, h in GUIDED]
    others = [v for k, v in acc.items() if tuple(map(int, k.split("."))) not in GUIDED]
    return {"val_speech_loss": round(sum(losses) / len(data), 4),
            "word_hit_guided": round(float(np.mean(guided)), 3),
            "word_hit_unguided_mean": round(float(np.mean(others)), 3),
            "word_hit_unguided_best": round(float(np.max(others)), 3)}


def new_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    t3 = upstream.new_t3(SIZES, 300)
    t3.tfmr.config._attn_implementation = "eager"
    return TrainableT3(t3)


def lora(model, targets, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                            target_modules=targets,
                                            modules_to_save=TEXT_MODULES))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="a grapheme tokenizer JSON (tests' tiny)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clips", type=int, default=96)
    args = ap.parse_args()
    torch.set_num_threads(1)
    text = GraphemeText(__import__("pathlib").Path(args.tokenizer), "es")
    t0 = time.time()
    a = corpus("es-419+f2", 0, args.clips, text)
    b = corpus("es+m3", 5000, args.clips // 2, text)
    speaker_a, speaker_b = torch.randn(1, 256, generator=torch.Generator().manual_seed(1)), \
        torch.randn(1, 256, generator=torch.Generator().manual_seed(2))
    print(json.dumps({"corpus_s": round(time.time() - t0, 1), "clips": [len(a), len(b)]}),
          flush=True)
    train_a, val_a = a[: -16], a[-16:]
    train_b, val_b = b[: -12], b[-12:]
    lower = r"t3\.tfmr\.layers\.[01]\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    for seed in args.seeds:
        results = {}
        for guide in (0.0, 1.0):
            model = new_model(seed)
            t = time.time()
            train(model, train_a, speaker_a, args.steps, seed, guide=guide)
            results[guide] = score(model, val_a, speaker_a)
            print(json.dumps({"question": "word guide", "seed": seed, "guide_weight": guide,
                              "steps": args.steps, "train_s": round(time.time() - t, 1),
                              **results[guide]}), flush=True)
        base = new_model(seed)
        train(base, train_a, speaker_a, args.steps, seed)
        for name, targets in (("none", None), ("attention+text", ATTENTION),
                              ("lower-layers+text", lower)):
            model = copy.deepcopy(base)
            if targets is not None:
                model = lora(model, targets, seed)
                train(model, train_b, speaker_b, args.steps // 3, seed)
                model = model.merge_and_unload()
                p1_steps = args.steps // 3
            else:
                p1_steps = 0
            model = lora(model, PROJECTIONS, seed)
            train(model, train_b, speaker_b, args.steps // 3 + (args.steps // 3 - p1_steps), seed)
            print(json.dumps({"question": "phase-1 split", "seed": seed, "phase1": name,
                              **score(model, val_b, speaker_b)}), flush=True)


if __name__ == "__main__":
    main()
