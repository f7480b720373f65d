"""The one typed schema for `params.yaml`.

Every stage loads the whole file through `load_params()` (so a typo anywhere is caught
before any work is done) and then reads only its own section. Values are cast here:
`dvc exp run -S lr=5e-5` writes `lr: 5e-05`, which YAML reads as a string.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from habla.errors import HablaError

PARAMS_FILE = "params.yaml"  # habla.paths.PARAMS


class ParamsError(HablaError, ValueError):
    """A params file that cannot be used; the message names the file, the key and the fix."""


# Which params keys a stage reads, recorded while `record_reads()` is active (the dvc.yaml
# test compares them with each stage's `params:` list). None: not recording (the default).
_reads: set[str] | None = None


class Section(BaseModel):
    # no inf/NaN: `.inf` parses as a float and would pass every `ge` bound
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # dotted key of this section in params.yaml ('phase1.lora'); set by load_params. None:
    # a section built in code (e.g. from a dict in a worker), whose reads are not params reads
    _key: str | None = PrivateAttr(default=None)
    _whole: bool = PrivateAttr(default=False)  # an element of a list-valued key (sources)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _reads is not None and name in type(self).model_fields:
            private = super().__getattribute__("__pydantic_private__") or {}
            key = private.get("_key")
            if key is None:
                return value
            if private.get("_whole"):
                _reads.add(key)
            elif not isinstance(value, Section):
                _reads.add(f"{key}.{name}" if key else name)
        return value

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if _reads is not None:
            _reads.update(_leaf_keys(self))
        return super().model_dump(*args, **kwargs)

    def model_dump_json(self, *args: Any, **kwargs: Any) -> str:
        if _reads is not None:
            _reads.update(_leaf_keys(self))
        return super().model_dump_json(*args, **kwargs)


def _leaf_keys(section: Section) -> set[str]:
    key, out = section._key, set()
    if key is None:
        return out
    if section._whole:
        return {key}
    for name in type(section).model_fields:
        value = BaseModel.__getattribute__(section, name)
        if isinstance(value, Section):
            out |= _leaf_keys(value)
        else:
            out.add(f"{key}.{name}" if key else name)
    return out


def _assign_keys(section: Section, key: str = "") -> None:
    section._key = key
    for name in type(section).model_fields:
        value = BaseModel.__getattribute__(section, name)
        child = f"{key}.{name}" if key else name
        if isinstance(value, Section):
            _assign_keys(value, child)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Section):
                    _mark_whole(item, child)


def _mark_whole(section: Section, key: str) -> None:
    """A list element (a source, a voice) is read as part of its list's key."""
    section._key, section._whole = key, True
    for name in type(section).model_fields:
        value = BaseModel.__getattribute__(section, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Section):
                _mark_whole(item, key)


@contextmanager
def record_reads() -> Iterator[set[str]]:
    """Collect the dotted params keys read (attribute access or model_dump) inside the block."""
    global _reads
    previous, _reads = _reads, set()
    try:
        yield _reads
    finally:
        _reads = previous


# ---------------------------------------------------------------- download
# A source's name is its folder under data/raw/: one plain path component, never `..`, `.`,
# a path or a name that download's own files (manifest.jsonl, ...) would collide with.
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description=(
    "the source's folder under data/raw/: letters, digits, '_' and '-', starting with a "
    "letter or digit"))]


class SyntheticVoice(Section):
    speaker: str = Field(description="speaker id written to the manifest")
    voice: str = Field(description="eSpeak NG voice, e.g. 'es-419+f2' or 'es+m3'")
    rate: int = Field(150, ge=80, le=450, description="words per minute")
    pitch: int = Field(50, ge=0, le=99)


class SyntheticSource(Section):
    kind: Literal["synthetic"]
    name: SourceName = "synthetic"
    language: str = "es"
    voices: list[SyntheticVoice]
    sentences: int = Field(300, ge=1, description="distinct sentences rendered, each once")
    first_sentence: int = Field(
        0, ge=0, description="index of the first sentence drawn; give corpora disjoint ranges"
    )
    recording_seconds: tuple[float, float] = (60.0, 120.0)
    pause_seconds: tuple[float, float] = (0.3, 1.5)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SyntheticSource:
        for key in ("recording_seconds", "pause_seconds"):
            low, high = getattr(self, key)
            if not 0 <= low <= high:
                raise ValueError(f"{key} must be [min, max] with 0 <= min <= max, got "
                                 f"[{low}, {high}]")
        if len({v.speaker for v in self.voices}) != len(self.voices):
            raise ValueError("voices: each voice needs its own speaker id")
        return self


class LocalSource(Section):
    kind: Literal["local"]
    name: SourceName = "local"
    path: str
    language: str = "es"
    speaker: str = "speaker0"
    transcripts: Literal["auto", "ljspeech", "json", "jsonl", "none"] = "auto"


class UrlSource(Section):
    kind: Literal["url"]
    name: SourceName = "url"
    url: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    language: str = "es"
    speaker: str = "speaker0"
    transcripts: Literal["auto", "ljspeech", "json", "jsonl", "none"] = "auto"


class HfSource(Section):
    kind: Literal["hf"]
    name: SourceName = "hf"
    dataset: str = Field(description="hub id, or a folder saved with Dataset.save_to_disk")
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    audio_column: str = "audio"
    text_column: str | None = "text"
    speaker_column: str | None = None
    language: str = "es"
    limit: int | None = Field(None, ge=1)


class YoutubeSource(Section):
    """Video or playlist URLs (YouTube or any other site yt-dlp supports): each video's best
    audio stream, as it is (extra `youtube`). Respect the rights of what you download."""

    kind: Literal["youtube"]
    name: SourceName = "youtube"
    urls: list[str] = Field(min_length=1, description="video and/or playlist URLs")
    language: str = "es"
    speaker: str = Field("speaker0", description="speaker id of every video of this source")
    max_videos: int | None = Field(None, ge=1, description="at most this many videos per URL "
                                   "(a playlist's first ones); None: all")
    format: str = Field("bestaudio/best", description="yt-dlp format selector: audio only, "
                        "best quality; 'best' only when a site offers no audio-only stream")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"only http(s) URLs are supported, got {bad}")
        return urls


Source = Annotated[
    SyntheticSource | LocalSource | UrlSource | HfSource | YoutubeSource,
    Field(discriminator="kind"),
]


class DownloadParams(Section):
    sources: list[Source] = Field(min_length=1)
    workers: int = Field(2, ge=1)


# ---------------------------------------------------------------- segment
class SegmentParams(Section):
    method: Literal["silero", "energy"] = "silero"
    min_duration: float = Field(1.0, gt=0)
    max_duration: float = Field(20.0, gt=0)
    margin: float = Field(0.1, ge=0, description="silence kept before and after speech, s")
    min_silence: float = Field(0.25, ge=0, description="pause that ends a segment, s")
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    sample_rate: int = Field(24000, ge=8000, le=384000)  # habla.audio's range of rates
    loudness_db: float = Field(-23.0, ge=-60, le=0, description="target RMS level of speech, "
                               "dBFS (below -60 a clip is near silence in 16 bits)")
    max_clipped_fraction: float = Field(
        0.01, ge=0, le=1,
        description="reject a recording ('clipped') when more than this fraction of its "
        "non-silent samples (|x| >= 0.01) sit in flat runs of 3+ equal samples at |x| >= 0.5",
    )
    workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _durations_ordered(self) -> SegmentParams:
        if self.min_duration >= self.max_duration:
            raise ValueError(
                f"min_duration ({self.min_duration}) must be below max_duration "
                f"({self.max_duration})"
            )
        return self


# ---------------------------------------------------------------- labels
class AsrParams(Section):
    model: str = Field(
        "whisper-base",
        description="faster-whisper model name ('large-v3', 'small', ...), a local "
        "CTranslate2 folder, or 'whisper-base' (offline, from the registry packages)",
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    batch_size: int = Field(8, ge=1)
    language: str = "es"
    beam_size: int = Field(1, ge=1)
    max_new_tokens: int = Field(128, ge=1, le=440)
    cpu_threads: int = Field(2, ge=0)


class TranscribeParams(Section):
    # Gates for clips with a reference text: a mismatched reference scores CER ~0.7, while
    # Whisper base mishearing eSpeak voices scores CER 0.2-0.3 and WER up to ~1.
    max_wer: float = Field(1.0, ge=0)
    max_cer: float = Field(0.4, ge=0)
    min_confidence: float = Field(-1.0, le=0, description="min avg log-prob for ASR labels")
    no_speech_threshold: float = Field(0.6, ge=0, le=1)
    compression_ratio_threshold: float = Field(2.4, gt=0)
    max_repeated_ngram: int = Field(4, ge=2, description="an n-gram repeated this often is a loop")
    verify_references: bool = Field(
        True, description="decode clips that have a reference text and drop those the ASR "
        "model disagrees with (the gates above); false: keep every reference as the label, "
        "undecoded (an ASR recipe: the base it is about to improve would drop exactly the "
        "clips it misreads)")


class TimestampsParams(Section):
    method: Literal["whisper", "ctc", "tts"] = Field(
        "whisper", description="whisper: Whisper cross-attention; ctc: a CTC model; tts: DTW "
        "against model.base's own rendering of the text (duration-based families)")
    ctc_model: str | None = Field(None, description="torchaudio bundle or HF CTC model")
    tts_speaker: str | None = Field(None, description="method tts: the base speaker to render "
                                    "with; None: the closest one per dataset speaker")
    tts_base: str | None = Field(
        None, description="method tts: the TTS model folder (or hub id) that renders the texts, "
        "its family read from its habla.json; None: model.base with model.family (an ASR "
        "recipe, whose model.base is Whisper, names a TTS base here)")
    min_aligned_fraction: float = Field(0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _ctc_needs_model(self) -> TimestampsParams:
        if self.method == "ctc" and not self.ctc_model:
            raise ValueError("method 'ctc' needs ctc_model (a torchaudio bundle such as "
                             "'MMS_FA', or a Hugging Face wav2vec2 CTC hub id or folder)")
        return self


class SplitFractions(Section):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitFractions:
        if self.val + self.test >= 1:
            raise ValueError(
                f"val + test ({self.val} + {self.test}) must be below 1: nothing left to train"
            )
        return self


class TokenizeParams(Section):
    model_type: Literal["char", "bpe", "unigram"] = "char"
    vocab_size: int = Field(64, ge=8)
    character_coverage: float = Field(1.0, gt=0, le=1)
    split: SplitFractions = SplitFractions()
    by_speaker: bool = False


# ---------------------------------------------------------------- training
# The task of each model family (habla.families.FAMILIES must agree: a test checks it). Kept
# here so that stages can tell TTS from ASR without importing the families (transformers).
FAMILY_TASKS: dict[str, Literal["tts", "asr"]] = {
    "fastspeech2": "tts", "speecht5": "tts", "chatterbox": "tts", "xtts": "tts",
    "whisper": "asr"}


class ModelParams(Section):
    family: Literal["fastspeech2", "speecht5", "chatterbox", "xtts", "whisper"] = "fastspeech2"
    base: str = Field("models/base", description="hub id or local folder; never written to")
    revision: str | None = None
    vocoder: str = Field("griffinlim", description="'griffinlim' or a hub id/folder")
    speaker: str | None = Field(None, description="speaker to adapt to; None: the most frequent")

    @property
    def task(self) -> Literal["tts", "asr"]:
        """'tts' or 'asr': what `family` does (reading it reads model.family)."""
        return FAMILY_TASKS[self.family]


class WhisperParams(Section):
    """Options of the `whisper` family (model.family: whisper); the language token is
    asr.language, the language habla transcribes in."""

    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="task token of the training labels (translate: the label "
        "texts are English translations)")
    phase1_labels: Literal["text", "clips"] = Field(
        "text", description="phase 1 targets: text = <|notimestamps|> and the transcript, the "
        "mode habla transcribes in; clips = one timestamped segment per clip")
    phase2_labels: Literal["words", "clips"] = Field(
        "words", description="phase 2 targets: words = one timestamped segment per word, from "
        "the timestamps stage's word times; clips = one segment per clip")
    phase2_text_windows: float = Field(
        0.0, ge=0, le=1, description="share of phase 2's windows labelled as phase 1's plain "
        "text instead (seeded), to rehearse transcription. A trade-off: on recipes/asr-es419 "
        "(40 steps, one run each) 0 gave test WER 0.059 and word starts within 17 ms (mean); "
        "0.5 gave WER 0.028 but the model then wrote one segment per clip (66 of 750 words "
        "timed); 0.2 gave WER 0.047 and 680 words timed, some hundreds of ms off")
    pack: bool = Field(
        True, description="pack several clips into each 30-s window (seeded first-fit, like "
        "Whisper's pretraining windows): ~4.7x less compute per clip (benchmarks/train_asr.py); "
        "false: one clip per window")
    pack_gap: tuple[float, float] = Field(
        (0.2, 1.0), description="silence between packed clips, drawn per clip, s [min, max]")

    @model_validator(mode="after")
    def _gap_ordered(self) -> WhisperParams:
        low, high = self.pack_gap
        if not 0 <= low <= high <= 5:
            raise ValueError(f"pack_gap must be [min, max] with 0 <= min <= max <= 5 s, got "
                             f"[{low}, {high}]")
        return self


class LoraParams(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None: the family's default")
    modules_to_save: list[str] | None = Field(None, description="None: the family's default")


class PhaseParams(Section):
    lr_factor: float = Field(1.0, gt=0, description="this phase's lr = lr_factor × lr")
    lora: LoraParams = LoraParams()
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["constant", "linear", "cosine", "inverse_sqrt"] = "cosine"
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(200, ge=1)
    eval_every: int = Field(50, ge=1)
    save_every: int = Field(50, ge=1)
    precision: Literal["no", "fp16", "bf16"] = "no"
    grad_clip: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, value: Any) -> Any:
        # `dvc exp run -S` rewrites `precision: "no"` unquoted; YAML 1.1 then reads False
        return "no" if value is False else value


class TrainParams(Section):
    """How the training stages (and the data stages that shard their clips) are launched."""

    processes: int = Field(1, ge=1, description="processes `accelerate launch` starts: one per "
                           "GPU, or CPU processes over gloo; 1: no launcher")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: a full copy per process; "
                                             "fsdp: parameters sharded (models that do not fit "
                                             "one GPU)")


class PretrainParams(Section):
    """Training the fastspeech2 base from random init (recipes/base-es), no LoRA."""

    hidden_size: int = Field(192, ge=8)
    layers: int = Field(2, ge=1, description="Conformer layers in the encoder and the decoder")
    linear_units: int = Field(512, ge=8)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(300, ge=0)
    schedule: Literal["constant", "linear", "cosine", "inverse_sqrt"] = "inverse_sqrt"
    batch_frames: int = Field(4000, ge=100, description="mel frames x clips per batch, at most")
    batch_size: int = Field(32, ge=1, description="clips per batch, at most")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(100000, ge=1)
    max_minutes: float | None = Field(40.0, gt=0, description="stop after this long; None: off")
    eval_every: int = Field(200, ge=1)
    save_every: int = Field(200, ge=1)
    precision: Literal["no", "fp16", "bf16"] = "no"
    grad_clip: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    val_fraction: float = Field(0.05, ge=0, lt=1)

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, value: Any) -> Any:
        return "no" if value is False else value


class WordGuideParams(Section):
    """Word times as a prior for T3's alignment heads in phase 2 (habla.families.chatterbox)."""

    weight: float = Field(0.0, ge=0, description="0: off; the loss is the attention mass "
                          "speech steps put on words that are elsewhere in time")
    heads: list[tuple[int, int]] = Field(
        [(12, 15), (13, 11), (9, 2)], min_length=1,
        description="(layer, head) pairs; default: the heads upstream's AlignmentStreamAnalyzer "
        "reads in the 30-layer multilingual T3")
    sigma: float = Field(0.15, gt=0, description="seconds; the prior's tolerance outside a word")


class ChatterboxSynthesisParams(Section):
    """How a merged chatterbox model speaks (written into its habla.json at merge)."""

    watermark: bool = Field(True, description="Perth watermark on every output, as upstream "
                            "does; false: plain audio")
    temperature: float = Field(0.8, gt=0)
    cfg_weight: float = Field(0.5, ge=0)
    exaggeration: float = Field(0.5, ge=0)
    repetition_penalty: float = Field(2.0, ge=1)
    min_p: float = Field(0.05, ge=0, le=1)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(1000, ge=1, description="speech tokens, 25 per second")


class ChatterboxParams(Section):
    """model.family chatterbox only (Resemble AI's multilingual Chatterbox)."""

    language: str = Field("es", min_length=2, description="the [xx] language tag T3 reads")
    new_tokens: bool = Field(False, description="add characters (and a language tag) the "
                             "grapheme tokenizer lacks, with mean-initialised rows")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the "
                                         "backward pass: less memory, ~30% slower")
    text_loss_weight: float = Field(1.0, ge=0, description="weight of T3's next-text-token "
                                    "loss beside the speech-token loss")
    word_guide: WordGuideParams = WordGuideParams()
    synthesis: ChatterboxSynthesisParams = ChatterboxSynthesisParams()


class XttsParams(Section):
    """model.family xtts only (coqui's XTTS-v2), read by phase1 and phase2. The LoRA
    preset of the XTTS-v2 fine-tuning guide (r 8, alpha 16, lr 1e-5, batch 2) lives in the
    phase sections of recipes/xtts-es419/params.yaml; these are what XTTS itself needs."""

    language: str = Field("es", description="XTTS language tag put before every text ([es])")
    conditioning_seconds: tuple[float, float] = Field(
        (3.0, 6.0), description="[min, max] seconds of another clip of the same speaker that "
        "condition each training clip (XTTS's 3-6 s conditioning mel)")
    max_audio_seconds: float = Field(11.6, gt=0, description="longer clips are rejected "
                                     "(XTTS's trainer: 255995 samples at 22.05 kHz)")
    max_text_tokens: int = Field(200, ge=1, description="clips with longer texts are rejected")
    text_loss_weight: float = Field(0.01, ge=0, description="weight of the text cross-entropy")
    mel_loss_weight: float = Field(1.0, gt=0, description="weight of the audio-code "
                                   "cross-entropy")
    reference_seconds: float = Field(30.0, gt=0, description="seconds of the speaker's "
                                     "training clips whose conditioning the merged model stores")
    codes_per_text_token: float | None = Field(
        None, gt=0, description="cap on generated audio codes per text token (short sentences "
        "otherwise get hallucinated tails); None: 1.5 x the training clips' 95th percentile")

    @model_validator(mode="after")
    def _conditioning_ordered(self) -> XttsParams:
        low, high = self.conditioning_seconds
        if not 0.5 <= low <= high:
            raise ValueError(f"conditioning_seconds must be [min, max] with 0.5 <= min <= max, "
                             f"got [{low}, {high}]")
        return self


class MergeParams(Section):
    parity_tolerance: float = Field(1e-3, gt=0)
    parity_utterances: int = Field(8, ge=1)


class EvaluateParams(Section):
    max_utterances: int | None = Field(None, ge=1, description="None: the whole test split")
    griffin_lim_iters: int = Field(32, ge=1)
    bootstrap_samples: int = Field(2000, ge=100)
    mcd_order: int = Field(24, ge=1, description="mel-cepstral coefficients c1..cN")
    samples_in_report: int = Field(10, ge=1)


class Params(Section):
    # what numpy and torch accept as a seed: -5 or 1e30 would fail only at train or evaluate
    seed: int = Field(1234, ge=0, le=2**32 - 1)
    lr: float = Field(1e-3, gt=0, description="phase-1 learning rate; sweep with -S lr=...")
    download: DownloadParams
    segment: SegmentParams = SegmentParams()
    asr: AsrParams = AsrParams()
    transcribe: TranscribeParams = TranscribeParams()
    timestamps: TimestampsParams = TimestampsParams()
    tokenize: TokenizeParams = TokenizeParams()
    model: ModelParams = ModelParams()
    whisper: WhisperParams = WhisperParams()
    phase1: PhaseParams = PhaseParams()
    phase2: PhaseParams = PhaseParams(lr_factor=0.5)
    train: TrainParams = TrainParams()
    pretrain: PretrainParams = PretrainParams()
    merge: MergeParams = MergeParams()
    evaluate: EvaluateParams = EvaluateParams()
    chatterbox: ChatterboxParams = ChatterboxParams()
    xtts: XttsParams = XttsParams()


_SOURCE_KINDS = {"synthetic": SyntheticSource, "local": LocalSource, "url": UrlSource,
                 "hf": HfSource, "youtube": YoutubeSource}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the key at `loc` (for listing valid keys)."""
    model: Any = Params
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in _SOURCE_KINDS and model is None:  # discriminated union member tag
            model = _SOURCE_KINDS[part]
            continue
        field = getattr(model, "model_fields", {}).get(part) if model else None
        if field is None:
            model = None
            continue
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _SOURCE_KINDS and out.endswith("]"):
            continue  # pydantic's union tag, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: dict[str, Any], path: Path) -> str:
    loc = tuple(err["loc"])
    key = _key(loc)
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc)
        valid = ", ".join(sorted(owner.model_fields)) if owner else "?"
        return f"{path}: unknown key '{key}'. Valid keys here: {valid}"
    if err["type"] == "missing":
        return f"{path}: missing key '{key}'"
    got = err.get("input")
    return f"{path}: '{key}' = {got!r}: {err['msg']}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last value and drops the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: keys written after it override, as YAML means
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: let the base loader report it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping (lines {first} and "
                    f"{key_node.start_mark.line + 1}): the first value would be lost",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file; raise ParamsError naming every bad key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run from the project folder)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r}): save it as UTF-8") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {dotted}={value!r}: '{part}' in {path} is not a "
                                  "section (a mapping), so it has no keys to set")
        node[leaf] = value
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, path) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None
    # defaults are shared instances: copy, so every section knows its own key
    params = params.model_copy(deep=True)
    _assign_keys(params)
    return params
