"""`habla push` through the real huggingface_hub client, against a stand-in hub on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from habla.model_folder import ModelInfo, save_info
from habla.modelcard import front_matter, write_evaluated
from habla.push import PushError, push

RESULTS = {"n_utterances": 28, "finetuned": {"cer": 0.224, "wer": 0.71, "mcd": 24.6,
                                             "spk_sim": 0.91, "dnsmos_ovrl": 2.9},
           "base": {"cer": 0.331, "mcd": 46.5}, "reference": {"cer": 0.213},
           "delta": {"cer": {"mean": -0.107, "ci_low": -0.195, "ci_high": -0.035}},
           "method": {"asr": {"model": "whisper-base"}}}


class Hub(BaseHTTPRequestHandler):
    """Just enough of the hub's HTTP API for create_repo and create_commit of small files."""

    repos: dict[str, dict] = {}
    files: dict[str, dict[str, bytes]] = {}
    validated: list[str] = []

    def _json(self, code: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            type(self).repos[repo] = req
            return self._json(200, {"url": f"{endpoint}/{repo}", "name": repo})
        if self.path == "/api/validate-yaml":  # the client checks README.md's front matter
            return self._validate(json.loads(body)["content"])
        parts = self.path.split("?")[0].split("/")  # /api/models/<org>/<name>/<what>/<rev>
        repo, what = f"{parts[3]}/{parts[4]}", parts[5]
        if what == "preupload":
            paths = [f["path"] for f in json.loads(body)["files"]]
            return self._json(200, {"files": [{"path": p, "uploadMode": "regular",
                                               "shouldIgnore": False} for p in paths]})
        if what == "commit":
            stored = type(self).files.setdefault(repo, {})
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    stored[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._json(200, {"commitUrl": f"{endpoint}/{repo}/commit/abc",
                                    "commitOid": "a" * 40})
        return self._json(404, {"error": f"not in the stand-in: {self.path}"})

    def _validate(self, content: str) -> None:
        """What the hub insists on in a model card's metadata (a subset): a YAML mapping, and
        model-index entries with a name, task type, dataset type/name and typed values."""
        meta, _ = front_matter(content)
        errors = [] if meta else ["no YAML front matter"]
        for entry in meta.get("model-index", []):
            for result in entry.get("results", []):
                if not (entry.get("name") and result.get("task", {}).get("type")
                        and result.get("dataset", {}).get("type")
                        and result.get("dataset", {}).get("name")):
                    errors.append("model-index: name, task.type, dataset.type/name required")
                for metric in result.get("metrics", []):
                    if not isinstance(metric.get("value"), int | float) or not metric.get(
                            "type"):
                        errors.append(f"model-index: bad metric {metric}")
        type(self).validated.append(content)
        return self._json(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                   "warnings": []})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest keeps tests offline
    Hub.repos, Hub.files, Hub.validated = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    merged = Path("models/merged")
    (merged / "tokenizer").mkdir(parents=True)
    (merged / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (merged / "tokenizer" / "spm.model").write_bytes(b"spm")
    save_info(merged, ModelInfo(family="fastspeech2", speaker="lat_f2",
                                base={"path": "models/base"},
                                base_provenance={"recipe": "recipes/base-es"}))
    (merged / "README.md").write_text(
        "---\nlanguage: es\n---\n\n# habla fastspeech2 Spanish TTS\n\nIntro.\n\n"
        "## How to load\n\n```bash\nhabla synth hola --model models/merged -o hola.wav\n```\n")
    Path("reports").mkdir()
    card = {"download_hours": 0.44, "download_recordings": 20, "train_clips": 159,
            "train_hours": 0.24, "transcribe_rejects_high_wer": 38}
    from habla.model_folder import load_info

    write_evaluated(Path("reports/model_card.md"), merged, None,
                    load_info(merged).model_dump(mode="json"), RESULTS, card,
                    datasets=["org/corpus"])
    return tmp_path


def _api(endpoint: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token="hf_test_token_not_real")


def test_evaluated_card_has_hub_front_matter_results_and_licence(project):
    text = Path("reports/model_card.md").read_text()
    meta, body = front_matter(text)
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # local base
    assert meta["language"] == ["es"] and meta["datasets"] == ["org/corpus"]
    assert "fastspeech2" in meta["tags"]
    metrics = {m["name"]: m["value"] for m in
               meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["CER (Whisper, normalised text)"] == 0.224
    assert metrics["DNSMOS OVRL (MOS estimate)"] == 2.9
    assert "## Evaluation" in body and "| CER ↓ | 0.213 | 0.331 | 0.224 |" in body
    assert "## Training data" in body and "| transcribe | – | – | 38 |" in body
    assert "| download | 0.44 h, 20 recordings | 0.44 h, 20 recordings | 0 |" in body
    assert "## How to load" in body and "recipes/base-es" in body


def test_card_takes_a_hub_base_and_its_licence_from_the_base_card(project, tmp_path):
    from habla.modelcard import base_license, evaluated

    lic, note = base_license("---\nlicense: mit\n---\n# SpeechT5\n", None)
    assert lic == "mit" and "base model's licence" in note
    assert base_license(None, None)[0] == "other"
    text = evaluated("# t\n", {"family": "speecht5", "base": {
        "path": "microsoft/speecht5_tts", "commit": "30fcde30f19b87502b8435427b5f5068e401d5f6"}},
        RESULTS, None, "mit", note)
    assert yaml.safe_load(text.split("---")[1])["base_model"] == "microsoft/speecht5_tts"


def test_push_uploads_the_folder_with_the_evaluated_card_as_readme(project, hub):
    summary = push("ana/voz-es", private=True, api=_api(hub))
    assert Hub.repos["ana/voz-es"]["visibility"] == "private"
    files = Hub.files["ana/voz-es"]
    assert sorted(files) == ["README.md", "habla.json", "model.safetensors",
                             "tokenizer/spm.model"]
    assert files["model.safetensors"] == Path("models/merged/model.safetensors").read_bytes()
    readme = files["README.md"].decode()
    assert readme.startswith("---\nlicense: apache-2.0") and "## Evaluation" in readme
    assert "--model ana/voz-es" in readme and "models/merged" not in readme
    assert summary["files"] == 4 and summary["commit"] == "a" * 40
    assert Hub.validated == [readme]  # the client had the hub check the card's metadata


def test_push_refuses_a_card_written_for_another_merged_model(project, hub):
    Path("models/merged/model.safetensors").write_bytes(b"retrained")
    with pytest.raises(PushError, match="written for another version of models/merged"):
        push("ana/voz-es", api=_api(hub))
    assert Hub.files == {}


def test_push_says_what_is_missing(project, hub):
    with pytest.raises(PushError, match="not a hub repo id"):
        push("just-a-name", api=_api(hub))
    Path("reports/model_card.md").unlink()
    with pytest.raises(PushError, match="dvc repro evaluate"):
        push("ana/voz-es", api=_api(hub))


def test_push_reports_a_hub_error_in_one_line(project, hub):
    closed = "http://127.0.0.1:9"  # discard port: nothing answers
    with pytest.raises(PushError, match=r"uploading to ana/voz-es failed: .*Error"):
        push("ana/voz-es", api=_api(closed))
