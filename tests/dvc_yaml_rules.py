"""What each stage of every dvc.yaml must declare, derived from the code (tests/test_dvc_yaml.py).

- Code deps: the import closure, within src/habla, of the stage's entry script (its habla
  imports, including those inside functions, and the packages that contain them).
- Outs: habla.paths.OUTPUTS[stage].
- Params: the keys the stage reads (recorded by habla.config.record_reads while it runs).
Deliberate differences live in the two lists below, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# params a stage reads but does not declare: they cannot change its outputs
UNDECLARED_PARAMS = {
    "download.workers": "each render unit runs in its own fresh process, so data/raw is "
                        "byte-identical whatever the worker count (tests/test_download_synthetic)",
    "segment.workers": "each recording is cut alone, so data/clips is byte-identical whatever "
                       "the worker count (tests/test_segment.py)",
    "train.processes": "transcribe, timestamps and evaluate share their clips among the "
                       "processes with byte-identical outputs whatever the count "
                       "(tests/test_distributed.py); the training stages declare it",
    "train.strategy": "likewise: read where train.processes is, declared by the training stages",
}
# params a stage declares although the default configuration does not read them: they are
# read on another path the same stage can take
CONDITIONAL_PARAMS = {
    "timestamps.ctc_model": "read only with timestamps.method ctc",
    "transcribe.min_confidence": "read only for clips without a reference text (the tiny "
                                 "corpus has a reference for every clip)",
    "transcribe.max_wer": "read only for clips with a reference text (a youtube source, as in "
                          "recipes/xtts-es419, has none)",
    "transcribe.max_cer": "read only for clips with a reference text (as transcribe.max_wer)",
    "asr.batch_size": "timestamps: read only with method whisper or ctc",
    "asr.beam_size": "timestamps: read only with method whisper",
    "asr.max_new_tokens": "timestamps: read only with method whisper",
    "asr.compute_type": "timestamps: read only with method whisper",
    "asr.cpu_threads": "timestamps: read only with method whisper",
    "asr.device": "timestamps: read only with method whisper or ctc",
    "asr.language": "timestamps: read only with method whisper",
    "asr.model": "timestamps: read only with method whisper",
}


def dvc_files() -> list[Path]:
    return [REPO / "dvc.yaml", *sorted((REPO / "recipes").glob("*/dvc.yaml"))]


def stages(dvc_file: Path) -> dict[str, dict]:
    return yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]


def _module_files() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "habla").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _module_files()


def imports_of(path: Path) -> set[str]:
    """habla modules a file imports anywhere in it (module level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "habla":
            if node.module in MODULES:
                out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
    return out


def stage_module(entry: Path) -> str | None:
    """habla.stages.<name> that an entry script runs through run_stage("<name>")."""
    found = re.search(r"run_stage\(\s*[\"'](\w+)[\"']", entry.read_text(encoding="utf-8"))
    return f"habla.stages.{found.group(1)}" if found else None


def closure(entry: Path) -> set[Path]:
    """Every src/habla file that running `entry` may import."""
    todo = set(imports_of(entry))
    module = stage_module(entry)
    if module:
        todo.add(module)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.update(imports_of(MODULES[name]) - seen)
    return {MODULES[n] for n in seen}


def entry_scripts(spec: dict, wdir: Path) -> list[Path]:
    return [(wdir / s).resolve() for s in re.findall(r"\S+\.py", spec["cmd"])]


def declared_outputs(spec: dict) -> list[str]:
    outs = []
    for key in ("outs", "metrics", "plots"):
        for item in spec.get(key) or []:
            outs.append(next(iter(item)) if isinstance(item, dict) else item)
    return outs


def declared_params(spec: dict) -> set[str]:
    return {p for p in spec.get("params") or [] if isinstance(p, str)}


# ---------------------------------------------------------------- writing the deps
def minimal_code_deps(needed: set[Path]) -> list[Path]:
    """`needed` files as dvc.yaml lists them: a folder (other than src/habla itself and the
    stages) when every .py file in it is needed, else the files."""
    folders = sorted({f.parent for f in needed if f.is_relative_to(SRC / "habla")},
                     key=lambda p: len(p.parts))
    whole: list[Path] = []
    for folder in folders:
        if folder in (SRC / "habla", SRC / "habla" / "stages"):
            continue
        if any(folder.is_relative_to(w) for w in whole):
            continue
        if set(folder.rglob("*.py")) <= needed:
            whole.append(folder)
    files = [f for f in needed if not any(f.is_relative_to(w) for w in whole)]
    return sorted(files + whole)


CODE_COMMENT = "# code: the entry script and every habla module it imports (tests/test_dvc_yaml.py)"


def rewrite_code_deps(dvc_file: Path) -> bool:
    """Rewrite the code part of every stage's deps in `dvc_file` from the import closure;
    data deps (and their comments) are kept as they are. Returns whether the file changed."""
    import os

    text = dvc_file.read_text(encoding="utf-8")
    lines = text.split("\n")
    out: list[str] = []
    specs = stages(dvc_file)
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = re.match(r"^  ([\w-]+):\s*$", line)
        if found:
            stage = found.group(1)
        if line.strip() == "deps:" and stage in specs:
            indent = line[: len(line) - len(line.lstrip())] + "  "
            block = []
            i += 1
            while i < len(lines) and (lines[i].startswith(indent) or not lines[i].strip()):
                if not lines[i].strip():
                    break
                block.append(lines[i])
                i += 1
            kept = []
            for entry in block:
                item = entry.strip()
                value = item[2:].strip() if item.startswith("- ") else None
                is_code = value is not None and (dvc_file.parent / value).resolve().is_relative_to(
                    SRC / "habla") or (value is not None and (dvc_file.parent / value).resolve()
                                       .is_relative_to(REPO / "stages"))
                if is_code or item.startswith("# code:"):
                    continue
                kept.append(entry)
            needed: set[Path] = set()
            for entry in entry_scripts(specs[stage], dvc_file.parent):
                needed |= {entry} | closure(entry)
            code = [f"{indent}- {os.path.relpath(p, dvc_file.parent)}"
                    for p in minimal_code_deps(needed)]
            # comments that introduced code deps have nothing left to introduce
            while kept and kept[0].strip().startswith("#") and not any(
                    not k.strip().startswith("#") for k in kept[:1]):
                nxt = kept[1].strip() if len(kept) > 1 else ""
                if nxt.startswith("- "):
                    break
                kept.pop(0)
            out += [line, f"{indent}{CODE_COMMENT}", *code, *kept]
            continue
        out.append(line)
        i += 1
    new = "\n".join(out)
    if new != text:
        dvc_file.write_text(new, encoding="utf-8")
        return True
    return False


if __name__ == "__main__":  # python tests/dvc_yaml_rules.py: rewrite the code deps
    for path in dvc_files():
        print(f"{path.relative_to(REPO)}: {'rewritten' if rewrite_code_deps(path) else 'ok'}")
