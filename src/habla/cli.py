"""The `habla` command: one subcommand per pipeline stage, plus `synth` and `report`.

`habla <stage>` is what `python stages/<stage>.py` (and so `dvc repro`) runs: it validates
params.yaml through the typed schema, runs the stage from the current folder and prints a
one-line summary. Errors in params, manifests or inputs end with a message, not a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

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


def _stage_command(name: str, doc: str) -> None:
    def command(params: ParamsOpt = Path(PARAMS_FILE)) -> None:
        run_stage(name, params)

    command.__doc__ = doc
    app.command(name)(command)


for _name, _doc in (
    ("download", "Fetch and prepare every source in params into data/raw/."),
    ("segment", "Split recordings into trimmed, normalised clips with VAD (data/clips/)."),
    ("transcribe", "Label clips with Whisper; reject unreadable clips (data/labels/)."),
    ("timestamps", "Force-align each clip's label text to word start/end times."),
    ("tokenize", "Split train/val/test by sentence and train the SentencePiece tokenizer."),
    ("phase1", "LoRA phase 1: text side (embeddings, encoder, prosody predictors)."),
    ("phase2", "LoRA phase 2: from phase 1's best, extended to the decoder and postnet."),
    ("merge", "Merge the adapters into a standalone model folder with a model card."),
    ("evaluate", "Synthesise the test split with base and merged models; WER, CER, MCD."),
):
    _stage_command(_name, _doc)
_stage_command("pretrain", "Train a fastspeech2 base from random init (recipes/base-es).")


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
    except (CompareError, OSError, ValueError) as exc:
        typer.secho(f"habla report: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    typer.echo(text, nl=False)


@app.command("synth")
def synth_command(
    text: Annotated[str, typer.Argument(help="the sentence to speak")],
    model: Annotated[str, typer.Option("--model", "-m", help="model folder or hub id")] = (
        "models/merged"),
    out: Annotated[Path, typer.Option("--out", "-o", help="wav file to write")] = Path(
        "out.wav"),
    speaker: Annotated[str | None, typer.Option("--speaker", help="voice name")] = None,
) -> None:
    """Speak TEXT with a model folder into a 16-bit wav."""
    from habla.synth import synth

    try:
        summary = synth(text, model, out, speaker)
    except (HablaError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"habla synth: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
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
    except (HablaError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"habla export: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    typer.echo(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    app()
