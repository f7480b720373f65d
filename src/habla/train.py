"""The training loop shared by pretraining and both LoRA phases.

In: a model (full or peft-wrapped), its family, cached training examples and a TrainConfig.
Out: the trained model (best val loss restored), a checkpoint folder that a rerun resumes
from exactly (`checkpoints/<phase>/<run key>/`), dvclive logs and a summary dict.
Runs the same under `accelerate launch` on GPUs (mixed precision, several processes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from habla import atomic, progress
from habla.crash import killpoint
from habla.errors import StageError, describe

log = logging.getLogger("habla.train")


class TrainingInterrupted(RuntimeError):
    """Raised by `stop_after`: simulates a run killed right after a step."""


@dataclass(frozen=True)
class TrainConfig:
    phase: str
    lr: float
    max_steps: int
    warmup_steps: int = 0
    schedule: str = "cosine"  # constant | linear | cosine | inverse_sqrt
    batch_size: int = 8
    max_frames: int | None = None  # cap on frames x examples per batch (length bucketing)
    grad_accum: int = 1
    eval_every: int = 50
    save_every: int = 50
    precision: str = "no"  # no | fp16 | bf16
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    seed: int = 1234
    max_minutes: float | None = None
    # processes sharing each batch (train.processes): part of the run key, so a checkpoint
    # of one process count is never resumed by another
    processes: int = 1


# ---------------------------------------------------------------- schedule and batches
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the schedule."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / (step + 1))
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    if cfg.schedule == "linear":
        return cfg.lr * (1.0 - progress)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def make_batches(frames: list[int], batch_size: int, max_frames: int | None, seed: int,
                 epoch: int) -> list[list[int]]:
    """One epoch of example indices in batches of similar length, in a seeded order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(frames)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pool = batch_size * 20  # sort within pools: similar lengths, still a fresh mix each epoch
    for start in range(0, len(order), pool):
        current: list[int] = []
        longest = 0
        for i in sorted(order[start:start + pool], key=lambda j: frames[j]):
            too_long = max_frames is not None and (
                (len(current) + 1) * max(longest, frames[i]) > max_frames)
            if current and (len(current) == batch_size or too_long):
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, frames[i])
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def code_hash() -> str:
    """Hash of the training code (habla's modules, not its dependencies): part of every run
    key, so a code change starts training afresh instead of resuming a finished run."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def json_default(obj: Any) -> Any:
    """For json.dumps of configs: sets sorted (str() of a set follows the process's hash
    seed: peft keeps target_modules lists as sets), anything else as str()."""
    return sorted(obj, key=str) if isinstance(obj, set | frozenset) else str(obj)


def run_key(parts: dict[str, Any]) -> str:
    """Hash of everything that defines a run (params, input hashes): its checkpoint folder."""
    import hashlib

    blob = json.dumps(parts, sort_keys=True, default=json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- modes and state
def _set_train_mode(model: nn.Module) -> None:
    """Train mode, but BatchNorm of frozen modules stays in eval: its running stats must not
    drift, or base + adapter deltas is no longer what was trained."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


def _set_loss_eval_mode(model: nn.Module) -> None:
    """Train-mode forward (FastSpeech2 only computes its loss there) with dropout and
    BatchNorm updates off: a deterministic validation loss."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm):
            m.eval()


def _saved_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and persistent buffers (BatchNorm stats): what training changes."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k in trainable or k in buffers}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _damaged(path: Path, exc: BaseException) -> StageError:
    return StageError(f"{path}: damaged checkpoint ({describe(exc)}); delete "
                      f"{path.parent} to train this phase from the start")


def _load_checkpoint(path: Path) -> Any:
    """A checkpoint this module saved; StageError naming the folder to delete when the file
    is truncated or overwritten (a rerun would otherwise fail the same way forever)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise _damaged(path, exc) from None


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic.atomic_target(path) as tmp:
        torch.save(obj, tmp)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- what a run leaves
def write_curves(live_dir: Path, history: list[dict[str, Any]]) -> None:
    """dvclive's plots folder (`<live_dir>/plots/metrics/*.tsv`) from the whole run's
    history: the losses, learning rate and gradient norm per step, nothing that depends on
    the machine's speed, so a rerun writes the same bytes."""
    import shutil

    from dvclive import Live

    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    for row in history:
        live.step = row["step"]
        for name, value in row.items():
            if name != "step":
                live.log_metric(name, value)
    live.end()
    # the phase's summary is metrics/<phase>.json; dvclive's own would be an untracked copy
    (live_dir / "metrics.json").unlink(missing_ok=True)


def write_timings(path: Path, state: dict[str, Any], resumed_from: int | None) -> None:
    """How fast the run went (per step, and in all), outside what DVC tracks: these figures
    change with the machine and its load, and would make every rerun look like a change."""
    atomic.write_text(path, json.dumps({
        "train_seconds": round(state["train_seconds"], 1), "resumed_from_step": resumed_from,
        "peak_memory_mb": max((r["peak_memory_mb"] for r in state["timings"]), default=None),
        "steps": state["timings"]}, indent=1))


# ---------------------------------------------------------------- the loop
def train(model: nn.Module, family: Any, train_examples: list[dict[str, Any]],
          val_examples: list[dict[str, Any]], cfg: TrainConfig, ckpt_dir: str | Path,
          live_dir: str | Path | None = None, stop_after: int | None = None,
          on_step: Callable[[int, float], None] | None = None,
          timings: str | Path | None = None) -> dict[str, Any]:
    """Train `model` in place; resume from `ckpt_dir` when it holds a checkpoint.

    Ends with the best-val-loss weights loaded (last weights when there is no val set).
    """
    from accelerate import Accelerator

    if not train_examples:
        raise ValueError(f"{cfg.phase}: no training examples")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic.sweep(ckpt_dir)  # a checkpoint a killed run was writing
    atomic.write_text(ckpt_dir / "config.json", json.dumps(asdict(cfg), indent=2))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    kwargs = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate.utils import DistributedDataParallelKwargs

        # LoRA and modules_to_save: a step may leave some trainable rows without a gradient
        kwargs.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    accelerator = Accelerator(mixed_precision=cfg.precision,
                              gradient_accumulation_steps=cfg.grad_accum, kwargs_handlers=kwargs)
    world, me = accelerator.num_processes, accelerator.process_index
    if world != cfg.processes:
        raise ValueError(f"{cfg.phase}: configured for {cfg.processes} process(es), running in "
                         f"{world} (start it through habla or `dvc repro`, which launch it)")
    trainables = [p for p in model.parameters() if p.requires_grad]
    if not trainables:
        raise ValueError(f"{cfg.phase}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(trainables, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)

    # everything a rerun needs to end exactly as an uninterrupted run, the logged history too
    state: dict[str, Any] = {"step": 0, "epoch": 0, "position": 0, "best_val": math.inf,
                             "best_step": None, "train_seconds": 0.0, "finished": False,
                             "history": [], "timings": []}
    best: dict[str, torch.Tensor] | None = None
    last = ckpt_dir / "last.pt"
    resumed_from = None
    if last.is_file():
        ckpt = _load_checkpoint(last)
        try:
            raw.load_state_dict(ckpt["model"], strict=False)
            optimizer.load_state_dict(ckpt["optimizer"])
            state.update(ckpt["state"])
            rng = ckpt["rng"]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise _damaged(last, exc) from None
        # one RNG state per process (a list), or the one of a single-process run
        if isinstance(rng, list):
            if len(rng) != world:
                raise StageError(f"{last}: saved by {len(rng)} processes, resumed with {world}:"
                                 f" set train.processes to {len(rng)}, or delete {ckpt_dir} "
                                 "to train this phase from the start")
            rng = rng[me]
        _set_rng_state(rng)
        if (ckpt_dir / "best.pt").is_file():
            best = _load_checkpoint(ckpt_dir / "best.pt")
        resumed_from = state["step"]
        log.info("%s: resuming from step %d (%s)%s", cfg.phase, state["step"], last,
                 ": already finished" if state["finished"] else "")

    frames = [e["frames"] for e in train_examples]
    batches = make_batches(frames, cfg.batch_size, cfg.max_frames, cfg.seed, state["epoch"])

    def next_batch() -> list[int]:
        """The next global batch, the same on every process (each trains on its share)."""
        nonlocal batches
        if state["position"] >= len(batches):
            state["epoch"] += 1
            state["position"] = 0
            batches = make_batches(frames, cfg.batch_size, cfg.max_frames, cfg.seed,
                                   state["epoch"])
        state["position"] += 1
        return batches[state["position"] - 1]

    def to_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(accelerator.device) for k, v in batch.items()}

    def validate() -> float:
        if not val_examples:
            return math.nan
        _set_loss_eval_mode(model)
        order = sorted(range(len(val_examples)), key=lambda i: val_examples[i]["frames"])
        total, count = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(order), cfg.batch_size):
                chunk = [val_examples[i] for i in order[s:s + cfg.batch_size]]
                with accelerator.autocast():
                    loss, _ = family.loss(model, to_device(family.collate(chunk)))
                total += loss.item() * len(chunk)
                count += len(chunk)
        return total / count

    def save_checkpoint() -> None:
        rng: Any = _rng_state()
        if world > 1:  # every process's generators, so each resumes its own dropout draws
            from accelerate.utils import gather_object

            rng = list(gather_object([rng]))
        if accelerator.is_main_process:
            _atomic_save({"model": _saved_state(raw), "optimizer": optimizer.state_dict(),
                          "state": dict(state), "rng": rng}, last)

    shown = progress.start(f"{cfg.phase}: training", cfg.max_steps, "steps", state["step"],
                           show=accelerator.is_main_process)
    while not state["finished"] and state["step"] < cfg.max_steps:
        t0 = time.perf_counter()
        lr = lr_at(state["step"], cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _set_train_mode(model)
        audio_seconds, loss_sum, grad_norm = 0.0, 0.0, math.nan
        for _ in range(cfg.grad_accum):
            batch = next_batch()
            share = batch[me::world]
            # each process's loss weighs its share of the global batch, so the averaged
            # gradient is the 1-process batch's (a process without a share adds zero)
            weight = len(share) * world / len(batch)
            if not share:
                share = batch[:1]
            chunk = [train_examples[i] for i in share]
            audio_seconds += sum(e["seconds"] for e in chunk) * (weight > 0)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, _ = family.loss(model, to_device(family.collate(chunk)))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{cfg.phase}: loss is {float(loss)} at step "
                                             f"{state['step']} (lower lr or check the data)")
                accelerator.backward(loss if world == 1 else loss * weight)
                if accelerator.sync_gradients:
                    grad_norm = float(accelerator.clip_grad_norm_(trainables, cfg.grad_clip))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if world == 1:
                loss_sum += loss.detach().item()
            else:  # the global batch's loss: the shares' losses weighted by their sizes
                part = loss.detach() * weight / world
                loss_sum += accelerator.reduce(part, reduction="sum").item()
        loss_value = loss_sum / cfg.grad_accum
        state["last_train_loss"] = loss_value
        state["step"] += 1
        step = state["step"]
        seconds = time.perf_counter() - t0
        state["train_seconds"] += seconds
        if on_step is not None:
            on_step(step, loss_value)
        shown.advance()
        metrics = {"train/loss": loss_value, "lr": lr, "grad_norm": grad_norm}
        # training time summed over resumed runs, so a restarted run keeps its budget
        out_of_time = (cfg.max_minutes is not None
                       and state["train_seconds"] / 60 >= cfg.max_minutes)
        last_step = step == cfg.max_steps or out_of_time
        if step % cfg.eval_every == 0 or last_step:
            val = validate()
            metrics["val/loss"] = val
            if val < state["best_val"]:
                state["best_val"], state["best_step"] = val, step
                best = _saved_state(raw)
                if accelerator.is_main_process:
                    _atomic_save(best, ckpt_dir / "best.pt")
            log.info("%s step %d/%d: train %.4f val %.4f lr %.2e", cfg.phase, step,
                     cfg.max_steps, loss_value, val, lr)
        state["history"].append({"step": step, **metrics})
        state["timings"].append({
            "step": step, "s_per_step": seconds, "peak_memory_mb": _peak_memory_mb(),
            "audio_s_per_s": audio_seconds * accelerator.num_processes / seconds})
        state["finished"] = last_step
        if step % cfg.save_every == 0 or last_step:
            save_checkpoint()
            killpoint("train_step")  # between a checkpoint save and the metrics write
        if stop_after is not None and step >= stop_after:
            raise TrainingInterrupted(f"{cfg.phase}: stopped after step {step} (stop_after)")
        if out_of_time:
            log.info("%s: max_minutes reached at step %d", cfg.phase, step)

    shown.close()
    if best is not None:
        raw.load_state_dict(best, strict=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # the curves come from the checkpointed history, not from the steps this process
        # ran: a resumed (or already finished) run writes what an uninterrupted one writes
        if live_dir is not None:
            write_curves(Path(live_dir), state["history"])
        write_timings(Path(timings) if timings else ckpt_dir / "timings.json", state,
                      resumed_from)
    n_train = sum(p.numel() for p in trainables)
    return {
        "steps": state["step"], "final_train_loss": state.get("last_train_loss"),
        "best_val_loss": state["best_val"] if state["best_step"] is not None else None,
        "best_step": state["best_step"],
        "trainable_params": n_train,
        "total_params": sum(p.numel() for p in raw.parameters()),
        "train_clips": len(train_examples), "val_clips": len(val_examples),
        "train_audio_hours": round(sum(e["seconds"] for e in train_examples) / 3600, 4),
    }
