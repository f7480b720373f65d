"""`habla synth` on a tiny speecht5 model folder, and its checks before torch loads."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_speecht5 import TEXTS, make_base
from typer.testing import CliRunner

import habla
from habla.cli import app
from habla.errors import HablaError, StageError
from habla.families.speecht5 import SpeechT5Family
from habla.model_folder import save_info
from habla.synth import MAX_SENTENCE_CHARS, check_sayable, outputs, read_sentences, synth
from habla.tokenizer import save_tokenizer, train_tokenizer

SRC = str(Path(habla.__file__).parents[1])  # this checkout's habla, for subprocesses


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_base(root / "base")
    save_tokenizer(train_tokenizer(TEXTS * 5, "char"), root / "tok")
    family = SpeechT5Family()
    model = family.load_base(str(root / "base"))
    family.hook_tokenizer(model, root / "tok", str(root / "base"))
    family.add_speaker(model, "lat_f2")
    family.add_speaker(model, "es_m3")
    out = root / "model"
    family.save_merged(model, out)
    save_tokenizer((root / "tok/spm.model").read_bytes(), out / "tokenizer")
    save_info(out, family.info)
    return out


def test_synth_writes_a_16_bit_wav_at_the_model_rate(model_dir, tmp_path):
    [summary] = synth("hola mundo", model_dir, tmp_path / "a.wav", speaker="es_m3")
    info = sf.info(tmp_path / "a.wav")
    assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.frames >= 256
    assert summary["speaker"] == "es_m3" and summary["family"] == "speecht5"
    synth("hola mundo", model_dir, tmp_path / "b.wav", speaker="es_m3")
    a, _ = sf.read(tmp_path / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    np.testing.assert_array_equal(a, b)  # seeded: same text, same audio


def test_synth_speaks_each_line_of_a_file_into_numbered_wavs(model_dir, tmp_path):
    (tmp_path / "frases.txt").write_text("hola mundo\n\n  el gato come pan  \nsol y luna\n")
    done = synth(None, model_dir, tmp_path / "out.wav", source=tmp_path / "frases.txt")
    assert [Path(d["out"]).name for d in done] == ["out_001.wav", "out_002.wav", "out_003.wav"]
    assert [d["text"] for d in done] == ["hola mundo", "el gato come pan", "sol y luna"]
    assert not (tmp_path / "out.wav").exists()
    lengths = [sf.info(d["out"]).frames for d in done]
    assert all(n >= 256 for n in lengths)


def test_synth_command_line_reads_sentences_from_stdin(model_dir, tmp_path):
    result = CliRunner().invoke(app, ["synth", "--file", "-", "--model", str(model_dir),
                                      "-o", str(tmp_path / "s.wav")], input="hola\nsol\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [x["text"] for x in lines] == ["hola", "sol"]
    assert (tmp_path / "s_001.wav").is_file() and (tmp_path / "s_002.wav").is_file()


def test_synth_names_the_valid_speakers_for_an_unknown_one(model_dir, tmp_path):
    with pytest.raises(StageError, match="unknown speaker 'nadie'.*lat_f2, es_m3"):
        synth("hola", model_dir, tmp_path / "x.wav", speaker="nadie")
    assert not (tmp_path / "x.wav").exists()


def test_synth_says_which_model_folder_is_missing_and_how_to_make_one(tmp_path):
    with pytest.raises(StageError, match=r"models/nothing does not exist \(run `dvc repro` "
                                         r"to make models/merged, or pass --model models/base"):
        synth("hola", "models/nothing", tmp_path / "x.wav")


def test_a_folder_habla_cannot_read_is_named(tmp_path):
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(HablaError, match="notamodel has no habla.json"):
        synth("hola", tmp_path / "notamodel", tmp_path / "x.wav")


def test_text_and_outputs_are_checked_before_anything_is_loaded(tmp_path):
    with pytest.raises(StageError, match="no words to say"):
        read_sentences("¿?", None)
    with pytest.raises(StageError, match="not both"):
        read_sentences("hola", tmp_path / "f.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(StageError, match="empty.txt is empty"):
        read_sentences(None, tmp_path / "empty.txt")
    with pytest.raises(StageError, match="nope.txt does not exist"):
        read_sentences(None, tmp_path / "nope.txt")
    assert read_sentences(None, "-", stdin=lambda: "uno\n\ndos\n") == [
        ("stdin, line 1", "uno"), ("stdin, line 3", "dos")]
    with pytest.raises(StageError, match="folder .*missing does not exist"):
        outputs(tmp_path / "missing" / "a.wav", 1, numbered=False)
    with pytest.raises(StageError, match="must be a .wav"):
        outputs(tmp_path / "a.mp3", 1, numbered=False)
    assert [p.name for p in outputs(tmp_path / "x.wav", 2, True)] == ["x_001.wav", "x_002.wav"]


# ------------------------------------------------------- bad input: one line, nothing lost
def test_a_sentence_too_long_to_say_is_refused_before_loading():
    long = " ".join(["hola mundo"] * 100)
    assert len(long) > MAX_SENTENCE_CHARS
    with pytest.raises(StageError, match=r"the sentence \('hola mundo.*…'\) has 1,099 "
                                         r"characters, more than the 1,000.*split it"):
        read_sentences(long, None)
    with pytest.raises(StageError, match="5,000 characters"):  # not int()'s digit limit
        read_sentences("7" * 5000, None)


def test_lines_that_are_not_utf8_are_named_with_every_other_fault():
    # a C.UTF-8 stdin hands undecodable bytes on as lone surrogates
    text = "hola\ncaf\udce9\n¿?\nsol\n"
    with pytest.raises(StageError, match=r"stdin, line 2 is not UTF-8.*; stdin, line 3 "
                                         r"\('¿\?'\) has no words"):
        read_sentences(None, "-", stdin=lambda: text)
    with pytest.raises(StageError, match="the sentence is not UTF-8"):
        read_sentences("caf\udce9", None)


def test_the_command_line_names_a_stdin_line_that_is_not_utf8(model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}
    code = "from habla.cli import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "synth", "-f", "-", "-m", str(model_dir), "-o", "s.wav"],
        input=b"hola\ncaf\xe9\n", capture_output=True, timeout=120, check=False, env=env,
        cwd=tmp_path)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr.strip() == "habla synth: stdin, line 2 is not UTF-8 (save the text as UTF-8)"
    assert not list(tmp_path.glob("*.wav"))


def test_an_output_that_is_a_folder_is_refused_before_loading(tmp_path):
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(StageError, match=r"d.wav is a folder, not a wav file"):
        outputs(tmp_path / "d.wav", 1, numbered=False)
    (tmp_path / "s_002.wav").mkdir()
    with pytest.raises(StageError, match=r"s_002.wav is a folder"):
        outputs(tmp_path / "s.wav", 3, numbered=True)


BASE = Path(__file__).parents[1] / "models" / "base"  # the shipped fastspeech2 base


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_corrupt_model_folder_is_named_in_one_line(tmp_path, damage):
    broken = tmp_path / "broken"
    shutil.copytree(BASE, broken)
    if damage == "config":
        (broken / "config.json").write_text("{not json")
        expected = r"cannot load .*broken: OSError: .*config.json.* not a valid JSON"
    else:
        weights = broken / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        expected = r"cannot load .*broken: SafetensorError: .*header"
    result = CliRunner().invoke(app, ["synth", "hola", "-m", str(broken),
                                      "-o", str(tmp_path / "x.wav")])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert re.match(rf"habla synth: {expected}", line), line
    assert not (tmp_path / "x.wav").exists()


def test_characters_the_model_cannot_say_are_refused_not_skipped(model_dir, tmp_path):
    # the tiny model's tokenizer knows the letters of TEXTS: no digits, no Cyrillic, no CJK
    with pytest.raises(StageError, match=r"the sentence \('hola привет'\) has characters "
                                         r".*model cannot say: привет \(spell them"):
        synth("hola привет", model_dir, tmp_path / "a.wav")
    assert not (tmp_path / "a.wav").exists()
    (tmp_path / "f.txt").write_text("hola mundo\n你好\nsol y luna\nluna ж\n")
    with pytest.raises(StageError, match=r"f.txt, line 2 \('你好'\) has characters .* "
                                         r"cannot say: 你好 .*; .*f.txt, line 4 \('luna ж'\) "
                                         r"has .* cannot say: ж"):
        synth(None, model_dir, tmp_path / "f.wav", source=tmp_path / "f.txt")
    assert not list(tmp_path.glob("*.wav"))  # all checked before the first is spoken
    # digits the tokenizer lacks are said in words, as the guides' text front ends do
    [done] = synth("sol 3", model_dir, tmp_path / "n.wav")
    assert done["text"] == "sol tres" and done["seconds"] > 0
    # punctuation the tokenizer lacks separates words: nothing is lost
    [done] = synth("«hola» — sol", model_dir, tmp_path / "b.wav")
    assert done["seconds"] > 0


def test_a_sentence_longer_than_the_model_reads_is_refused(model_dir, tmp_path):
    long = " ".join(["hola mundo"] * 20)  # 219 characters; the tiny model reads 200 tokens
    with pytest.raises(StageError, match=r"the sentence .* has 221 tokens, more than the 200 "
                                         r".*model reads at once: split it"):
        synth(long, model_dir, tmp_path / "a.wav")
    assert not (tmp_path / "a.wav").exists()


def test_a_sentencepiece_model_refuses_letters_it_lacks_and_not_punctuation():
    import types

    import sentencepiece as spm

    from habla.families.fastspeech2 import FastSpeech2

    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(["hola mundo"] * 5, "char"))
    family = FastSpeech2()
    assert family.unsayable(sp, "Hola, ¿mundo?") == ""  # case, unknown punctuation
    assert family.unsayable(sp, "mañana ñu") == "ñ"
    assert family.unsayable(None, "mañana") == ""  # no tokenizer: nothing to judge by
    fits = len(sp.encode("Hola, ¿mundo?")) + 1  # pieces and </s>
    model = types.SimpleNamespace(config=types.SimpleNamespace(max_source_positions=fits))
    assert family.text_budget(model, sp, "hola") == (len(sp.encode("hola")) + 1, fits)
    synthesizer = types.SimpleNamespace(unsayable=lambda t: family.unsayable(sp, t),
                                        text_budget=lambda t: family.text_budget(model, sp, t))
    check_sayable([("the sentence", "Hola, ¿mundo?")], synthesizer, "m")
    with pytest.raises(StageError, match="m cannot say: ñ"):
        check_sayable([("the sentence", "mañana")], synthesizer, "m")
    longer = "Hola, ¿mundo? hola"
    tokens = len(sp.encode(longer)) + 1
    with pytest.raises(StageError, match=rf"has {tokens} tokens, more than the {fits} m "):
        check_sayable([("the sentence", longer)], synthesizer, "m")


# ------------------------------------------------------------------ hub ids, no network
def _run(code: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """`code` in a fresh interpreter with an empty HF cache; (result, seconds)."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}  # conftest sets them
    full.update({"PYTHONPATH": SRC, "HF_HOME": str(tmp_path / "hf"),
                 "HF_HUB_DISABLE_TELEMETRY": "1", **env})
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env=full, cwd=tmp_path)
    return done, time.perf_counter() - t0


# the command line, then whether torch was imported on the way to the error
CLI = ("import sys\nfrom habla.cli import app\ntry:\n    app(['synth', 'hola', '--model', "
       "'{model}', '-o', 'x.wav'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
       "print('torch' in sys.modules)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hub_id_fails_fast_and_clearly_when_the_hub_cannot_be_reached(tmp_path):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    done, seconds = _run(CLI.format(model="x/y"), tmp_path, HF_ENDPOINT=endpoint)
    assert done.stdout.split() == ["exit", "2", "False"], done.stderr
    assert "model 'x/y' is not a folder here, and the hub" in done.stderr
    assert "could not be reached" in done.stderr and "--model models/base" in done.stderr
    assert seconds < 20  # interpreter and imports included, on a busy 2-core box


def test_hf_hub_offline_skips_the_lookup(tmp_path):
    done, _ = _run(CLI.format(model="x/y"), tmp_path, HF_HUB_OFFLINE="1")
    assert done.stdout.split() == ["exit", "2", "False"], done.stderr
    assert "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in done.stderr


class _Hub(BaseHTTPRequestHandler):
    """A stand-in hub: every model is missing (or, for silent paths, never answers)."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        if "/silent/" in self.path:
            time.sleep(6)
            return
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hub.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_hub_id_is_still_looked_up_on_the_hub(tmp_path, hub):
    done, _ = _run(CLI.format(model="org/voz"), tmp_path, HF_ENDPOINT=hub)
    assert done.stdout.split() == ["exit", "2", "False"], done.stderr
    assert any(p.startswith("/api/models/org/voz") for p in _Hub.seen)
    assert "no model 'org/voz' on the hub" in done.stderr


def test_a_hub_that_does_not_answer_times_out(tmp_path, hub):
    code = ("import habla.synth as s\ns.HUB_TIMEOUT = 1.0\ntry:\n    s.check_model('org/silent')"
            "\nexcept Exception as e:\n    print(type(e).__name__, e)")
    done, seconds = _run(code, tmp_path, HF_ENDPOINT=f"{hub}/silent")
    assert "StageError" in done.stdout and "could not be reached" in done.stdout, done.stderr
    assert seconds < 5.5  # the hub sleeps 6 s: the timeout ended the wait
