"""The `habla` command: one subcommand per pipeline stage, plus `synth`, `report` and `push`.

`habla <stage>` is what `python stages/<stage>.py` (and so `dvc repro`) runs: it validates
params.yaml through the typed schema, runs the stage from the current folder and prints a
JSON summary and a line in words. Each stage's --help says what it reads and writes. Errors in
params, manifests or inputs end with a message, not a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from habla import paths
from habla.config import PARAMS_FILE
from habla.errors import HablaError
from habla.runner import run_stage

app = typer.Typer(
    help="Reproducible speech-model fine-tuning: raw recordings to an evaluated model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from habla import __version__

        typer.echo(f"habla {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print habla's version")] = False
         ) -> None:
    """Reproducible speech-model fine-tuning: raw recordings to an evaluated model."""


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]


# stage -> (what it does, what it reads); what it writes comes from habla.paths.OUTPUTS
STAGES = {
    "download": ("Fetch and prepare every source in params into data/raw/.",
                 "params download.sources (and the files or URLs they name)"),
    "segment": ("Split recordings into trimmed, normalised clips with VAD.",
                "data/raw/, params segment.*"),
    "transcribe": ("Label clips with Whisper; reject clips whose audio does not match.",
                   "data/clips/, params asr.*, transcribe.*"),
    "timestamps": ("Force-align each clip's label text to word (and letter) times.",
                   "data/labels/transcribed.jsonl, data/clips/, models/base (method tts), "
                   "params timestamps.*, asr.*, model.*"),
    "tokenize": ("Split train/val/test by sentence, train the tokenizer, write the data card.",
                 "data/labels/aligned.jsonl and the upstream summaries, params tokenize.*, "
                 "seed"),
    "phase1": ("LoRA phase 1: text side (embeddings, encoder, prosody predictors).",
               "models/base, models/tokenizer, data/splits/, data/clips/, params phase1.*, "
               "model.*, lr, seed"),
    "phase2": ("LoRA phase 2: from phase 1's best, extended to the decoder and postnet.",
               "models/phase1 and what phase1 reads, params phase2.*"),
    "merge": ("Merge the adapters into a standalone model folder with a model card.",
              "models/phase2, models/base, data/splits/val.jsonl, metrics/phase*.json, "
              "params merge.*, model.*"),
    "evaluate": ("Synthesise the test split with the base and merged models and score them "
                 "(CER, WER, MCD, speaker similarity, DNSMOS) into the report and model card.",
                 "data/splits/test.jsonl, data/clips/, models/base, models/merged, "
                 "metrics/data.json, dvclive/phase*/, params evaluate.*, asr.*, model.*"),
    "pretrain": ("Train a fastspeech2 base from random init (run in recipes/base-es).",
                 "data/clips/, params pretrain.*, seed"),
}


def stage_help(name: str) -> str:
    """A stage's --help: what it does, reads and writes, and what running it here skips."""
    doc, reads = STAGES[name]
    writes = ", ".join(p.as_posix() + ("/" if not p.suffix else "")
                       for p in paths.OUTPUTS.get(name, []))
    target = "recipes/base-es/dvc.yaml:pretrain" if name == "pretrain" else name
    return (f"{doc}\n\nReads: {reads}.\n\nWrites: {writes}.\n\nRunning `habla {name}` "
            "directly bypasses DVC: dvc.lock is not updated and the stage's inputs are not "
            f"checked for staleness. `dvc repro {target}` runs this same command and records "
            "it.")


def _stage_command(name: str) -> None:
    def command(params: ParamsOpt = Path(PARAMS_FILE)) -> None:
        run_stage(name, params)

    command.__doc__ = stage_help(name)
    app.command(name, short_help=STAGES[name][0])(command)


for _name in STAGES:
    _stage_command(_name)


@app.command("report")
def report(
    compare: Annotated[str | None, typer.Option(
        "--compare", help="git revision to compare with: prints a Markdown PR summary")] = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="print where the report is and the headline figures")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="also write the Markdown to this file")] = None,
) -> None:
    """Summarise the evaluation: a PR comment (--compare REV) or the headline (--summary)."""
    from habla.report.compare import CompareError, compare_markdown, summary_text

    if (compare is None) == (not summary):
        typer.secho("habla report: give exactly one of --compare REV or --summary",
                    fg=typer.colors.RED, err=True)
        sys.exit(2)
    try:
        text = compare_markdown(compare) if compare is not None else summary_text()
        if output is not None:
            _write_output(output, text)
    except (CompareError, OSError, ValueError) as exc:
        typer.secho(f"habla report: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    typer.echo(text, nl=False)


def _write_output(output: Path, text: str) -> None:
    """Write `text` to `output`, making its folder; OSError naming the file and the cause."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"--output {output}: cannot make its folder {output.parent} "
                      f"({exc.strerror or exc})") from None
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OSError(f"--output {output}: cannot write ({exc.strerror or exc})") from None


def _fail(command: str, exc: Exception) -> None:
    message = str(exc)
    if not message.startswith(f"{command}:"):
        message = f"{command}: {message}"
    typer.secho(f"habla {message}", fg=typer.colors.RED, err=True)
    sys.exit(2)


@app.command("synth")
def synth_command(
    text: Annotated[str | None, typer.Argument(help="the sentence to speak")] = None,
    file: Annotated[str | None, typer.Option(
        "--file", "-f", help="text file with one sentence per line (- reads stdin): "
        "writes OUT_001.wav, OUT_002.wav, ...")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="model folder or hub id")] = (
        "models/merged"),
    out: Annotated[Path, typer.Option("--out", "-o", help="wav file to write")] = Path(
        "out.wav"),
    speaker: Annotated[str | None, typer.Option("--speaker", help="voice name")] = None,
) -> None:
    """Speak TEXT (or each line of --file) with a model folder into 16-bit wav files.

    One sentence: one file, OUT.

    A file or stdin (--file -): one numbered wav per non-empty line, beside OUT.

    Each file written prints one JSON line.
    """
    from habla.synth import synth

    try:
        summaries = synth(text, model, out, speaker, source=file)
    except (HablaError, OSError, ValueError) as exc:  # OSError: e.g. -o in a read-only folder
        _fail("synth", exc)
    for summary in summaries:
        typer.echo(json.dumps(summary, ensure_ascii=False))


@app.command("push")
def push_command(
    repo_id: Annotated[str, typer.Option("--repo-id", help="hub repo: user/name or org/name")],
    private: Annotated[bool, typer.Option("--private", help="create the repo private")] = False,
) -> None:
    """Upload models/merged to the Hugging Face hub with its evaluated card as README.md.

    The card is reports/model_card.md, written by `evaluate` for the same merged folder (run
    `dvc repro` first). Log in with `hf auth login` or set HF_TOKEN.
    """
    from habla.push import push

    try:
        summary = push(repo_id, private)
    except HablaError as exc:
        _fail("push", exc)
    typer.echo(json.dumps(summary, ensure_ascii=False))


export_app = typer.Typer(help="Write habla's data in other tools' layouts.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("ljspeech")
def export_ljspeech_command(
    out: Annotated[Path, typer.Argument(help="folder to write (new, or an earlier export)")],
    splits: Annotated[Path, typer.Option("--splits", help="folder of the split manifests")] = (
        Path("data/splits")),
) -> None:
    """The train/val/test splits as LJSpeech: wavs/, metadata.csv, metadata_<split>.csv."""
    from habla.export import export_ljspeech  # light: no torch

    try:
        summary = export_ljspeech(out, splits)
    except (HablaError, OSError, ValueError) as exc:
        typer.secho(f"habla export: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    typer.echo(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    app()
