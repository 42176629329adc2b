"""avasr's configuration: one dataclass per concern (model, features, decoding, data, training, augmentation),
composed into `Config`, a training run's flat whole. Defaults are the original design's; every field is overridable
from the CLI (a flag built from the field and its comment) and from a plain dict (a Tune trial).

    build_model(config.model)       the network sees ModelConfig only
    InferenceConfig                 model + features + decoding: what a shipped ONNX file carries
    Config.from_dict(flat)          checkpoints, Tune spaces and MLflow params stay flat

Fixed architectural constants live here too, so no module hides a magic number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from avasr.errors import AvasrError
from avasr.text import VOCAB_SIZE

# --- constants that the architecture, not the user, decides -------------------------------------------------
AUDIO_TIME_DOWNSAMPLING = 4  # the audio encoder's time stride: 100 mel frames/s -> 25 Hz, the video rate
LIP_PIXEL_MEAN = 0.5  # lip crops are scaled to [0, 1] and then standardised with these two
LIP_PIXEL_STD = 0.25
NUM_CLASSES = VOCAB_SIZE  # 29: blank, space, apostrophe, a-z
FUSIONS = ("simple", "weighted", "attention", "adaptive")
EDGE_PADDING, ZERO_PADDING = "edge", "zeros"  # what the model's time convolutions read beyond a clip (model/edges.py)
TIME_PADDINGS = (EDGE_PADDING, ZERO_PADDING)
DECODERS = ("greedy", "beam")
LR_SCHEDULES = ("plateau", "cosine")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # bf16: activations under torch.autocast; weights, optimizer and CTC stay fp32
AUDIO_ONLY, VIDEO_ONLY, AUDIO_VISUAL = "audio", "video", "audio+video"  # the streams a model is fed
MODALITIES = (AUDIO_ONLY, VIDEO_ONLY, AUDIO_VISUAL)
NOISE_KINDS = ("white", "pink", "babble")  # babble: other speakers' speech


class ConfigError(AvasrError, ValueError):
    """An unknown key, a wrong type or an invalid value in a configuration."""


# Fields whose default is not what models saved before the field existed were made with: a stored config that
# lacks one gets this value instead (a model trained with zero padding keeps it).
EARLIER_DEFAULTS = {"time_padding": ZERO_PADDING}


def with_earlier_defaults(stored: dict) -> dict:
    """A stored config (a checkpoint's, an ONNX file's) with EARLIER_DEFAULTS for the fields it predates."""
    return {**EARLIER_DEFAULTS, **stored}


class _Section:
    """What every configuration dataclass shares: validation by each class's own `check` (collected along the
    MRO, so a composed config checks every section it is made of), and plain-dict construction."""

    def __post_init__(self):
        problems = [problem for check in self._checks() for problem in check(self)]
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))

    @classmethod
    def _checks(cls):
        return [c.__dict__["check"] for c in reversed(cls.__mro__) if "check" in c.__dict__]

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a plain dict (JSON, a Tune trial config). Unknown keys and wrong types are refused."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)} (known: {', '.join(known)})")
        hints = typing.get_type_hints(cls)
        coerced, wrong = {}, []
        for key, value in values.items():
            try:
                coerced[key] = _coerce(value, hints[key])
            except (TypeError, ValueError):
                wrong.append(f"{key}={value!r} (expected {_type_name(hints[key])})")
        if wrong:
            raise ConfigError("wrong types in configuration: " + ", ".join(wrong))
        return cls(**coerced)

    @classmethod
    def of(cls, config):
        """This section's fields of a larger config (e.g. `ModelConfig.of(config)`): the part a component sees."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        """Plain types only (tuples as lists): safe for JSON, MLflow params and torch.load(weights_only=True)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})


# --- the sections: one concern each ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig(_Section):
    """What the network is: everything `build_model` reads, and nothing else."""

    n_mels: int = 40  # log-mel bands: the audio encoder's input height
    lip_size: int = 64  # lip crops are lip_size x lip_size grayscale: the video encoder's input
    encoder_channels: tuple[int, ...] = (32, 64, 128)  # the original's three conv layers, for both encoders
    feature_dim: int = 512  # width of both encoders' outputs, of the fusion and of the temporal block
    fusion: str = "adaptive"  # simple | weighted | attention | adaptive (the original recommends adaptive)
    temporal_layers: int = 3  # dilated temporal conv blocks after fusion: CTC needs context the original lacked
    temporal_kernel: int = 5  # with dilations 1, 2, 4 the receptive field is 29 frames (1.16 s at 25 fps)
    dropout: float = 0.2  # the original's dropout, in encoders, fusion and temporal block
    # the video encoder sees each lip-crop pixel minus its mean over the utterance: the face's still appearance
    # (skin, lip colour and shape, light) goes, the mouth's movement stays
    lip_motion: bool = False
    # what the time convolutions read before a clip's first frame and after its last: each utterance's own edge
    # frames repeated (edge), or zeros, which mark the clip's edges and let the model place words by them (the
    # models trained before this field existed)
    time_padding: str = EDGE_PADDING

    def check(self) -> list[str]:
        problems = []
        if self.fusion not in FUSIONS:
            problems.append(f"fusion={self.fusion!r} is not one of {', '.join(FUSIONS)}")
        if self.time_padding not in TIME_PADDINGS:
            problems.append(f"time_padding={self.time_padding!r} is not one of {', '.join(TIME_PADDINGS)}")
        for name in ("n_mels", "lip_size", "feature_dim", "temporal_layers"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.temporal_kernel <= 0 or self.temporal_kernel % 2 == 0:
            problems.append(
                f"temporal_kernel must be odd and positive (frames stay centred), got {self.temporal_kernel}"
            )
        if any(c <= 0 for c in self.encoder_channels):
            problems.append(f"encoder_channels must be positive, got {self.encoder_channels}")
        if len(self.encoder_channels) != 3:
            problems.append(f"encoder_channels needs 3 values (one per conv layer), got {self.encoder_channels}")
        return problems


@dataclass(frozen=True)
class FeatureConfig(_Section):
    """How media become the model's inputs (with ModelConfig's n_mels and lip_size): the front end."""

    sample_rate: int = 16000  # every file is resampled to this
    window_ms: float = 25.0  # STFT window (n_fft = 400 samples at 16 kHz)
    hop_ms: float = 10.0  # 100 feature frames/s, 4 per video frame at 25 fps
    fps: float = 25.0  # GRID and LRS are 25 fps (the original says 30); other rates are converted to this
    face_landmarker_model: str = ""  # a MediaPipe .task file: lip landmarks instead of the Haar face box (optional)
    modalities: str = "audio+video"  # audio | video | audio+video: the other stream is blanked (ablations)

    def check(self) -> list[str]:
        problems = []
        if self.modalities not in MODALITIES:
            problems.append(f"modalities={self.modalities!r} is not one of {', '.join(MODALITIES)}")
        for name in ("sample_rate", "window_ms", "hop_ms"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.fps <= 0:
            problems.append(f"fps must be positive, got {self.fps}")
        return problems

    @property
    def n_fft(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def mel_frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def audio_samples_per_video_frame(self) -> float:
        return self.sample_rate / self.fps  # 640 at 16 kHz and 25 fps


@dataclass(frozen=True)
class DecodeOptions(_Section):
    """How log-probabilities become text."""

    decoder: str = "greedy"  # greedy | beam
    beam_size: int = 5  # CTC prefix beam width
    lexicon: str = ""  # optional word list (one word per line) that restricts beam search

    def check(self) -> list[str]:
        problems = []
        if self.decoder not in DECODERS:
            problems.append(f"decoder={self.decoder!r} is not one of {', '.join(DECODERS)}")
        if self.beam_size <= 0:
            problems.append(f"beam_size must be positive, got {self.beam_size}")
        if self.lexicon and self.decoder != "beam":
            problems.append("a lexicon restricts beam search only: set decoder='beam' with it")
        return problems

    @property
    def decoding(self) -> DecodeOptions:
        return DecodeOptions.of(self)

    def with_overrides(self, decoder: str | None = None, beam_size: int | None = None, lexicon: str | None = None):
        """These options with the given ones (None or empty: keep) in their place; a lexicon implies beam search."""
        overrides = {k: v for k, v in (("decoder", decoder), ("beam_size", beam_size), ("lexicon", lexicon)) if v}
        if lexicon and not decoder:
            overrides["decoder"] = "beam"
        return self.replace(**overrides) if overrides else self


@dataclass(frozen=True)
class InferenceConfig(DecodeOptions, FeatureConfig, ModelConfig):
    """What a shipped model needs to turn files into text: the network, its front end and its decoding. An ONNX
    file carries exactly this in its metadata (never training paths or settings)."""

    @property
    def model(self) -> ModelConfig:
        return ModelConfig.of(self)

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig.of(self)


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the training data is and how it is read."""

    train_manifest: str = ""  # audio_path|video_path|transcript per line; paths relative to the manifest
    val_manifest: str = ""  # used for early stopping and LR decay (val WER)
    output_dir: str = "outputs/run"  # checkpoints, training.log, metrics.csv
    cache_dir: str = "data/cache"  # log-mels and lip crops cached by file content; "" disables; shared on a cluster
    data_workers: int = 0  # processes that preprocess uncached utterances; 0 = one per CPU core
    # read each utterance from the feature cache as batches need it (avasr.data.streaming) instead of holding the
    # corpus in memory: memory stays flat as the corpus grows; with num_workers > 0 the reads overlap training
    streaming: bool = False
    # > 0: length-bucketed training batches of at most this many padded video frames (validation keeps batch_size):
    # far less padding on corpora of mixed lengths (avasr.data.batching). 0: batches of batch_size, as the original
    max_batch_frames: int = 0

    def check(self) -> list[str]:
        problems = []
        if self.max_batch_frames < 0:
            problems.append(f"max_batch_frames must be >= 0, got {self.max_batch_frames}")
        if self.streaming and not self.cache_dir:
            problems.append("streaming reads the feature cache: set cache_dir")
        if self.data_workers < 0:
            problems.append(f"data_workers must be >= 0, got {self.data_workers}")
        return problems


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The optimisation: batches, the learning-rate schedule, early stopping, the device and the seed."""

    batch_size: int = 16  # the original's; lower to 8 when memory is short
    epochs: int = 50  # upper bound; early stopping usually ends sooner
    lr: float = 5e-4  # Adam
    weight_decay: float = 0.0  # Adam's L2; the original uses none
    label_smoothing: float = 0.1  # weight of the uniform-posterior term added to CTC (see avasr.objective)
    grad_clip: float = 5.0  # max global grad norm; CTC gradients spike on hard utterances
    patience: int = 5  # stop when val WER has not improved for this many epochs
    # plateau: the original's decay when val WER stalls; cosine: from lr down to lr * lr_final_ratio over `epochs`,
    # per step, so a short run ends at a small LR instead of waiting for plateaus it has no epochs left to see
    lr_schedule: str = "plateau"
    lr_decay_factor: float = 0.5  # plateau: multiply the LR by this when val WER plateaus ...
    lr_decay_patience: int = 2  # ... for this many epochs (shorter than `patience`, so decay comes first)
    lr_final_ratio: float = 0.05  # cosine: the last step's LR as a fraction of lr
    # Linear warm-up from ~0 to lr over this many epochs (fractions allowed): a high LR from the first step knocks
    # CTC into its blank-only plateau; reached gradually it leaves the plateau sooner. 0: the original's constant LR.
    warmup_epochs: float = 0.0
    # > 0: an exponential moving average of the weights, updated after every step with this decay, is what each
    # epoch evaluates and the checkpoints keep as the model (0: the trained weights themselves). It smooths out
    # where the last steps happened to leave the weights; about 1 / (1 - decay) steps are averaged.
    ema_decay: float = 0.0
    num_workers: int = 0  # DataLoader workers; features are in memory, so 0 is usually fastest
    device: str = "auto"  # auto picks cuda when available
    precision: str = "fp32"  # fp32 | bf16: forward passes under bf16 autocast (weights stay fp32)
    seed: int = 42  # seeds python, numpy, torch and the shuffling of every epoch

    def check(self) -> list[str]:
        problems = []
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.lr_final_ratio <= 1.0 or self.warmup_epochs < 0:
            problems.append(
                f"lr_final_ratio must be in [0, 1] and warmup_epochs >= 0, got {self.lr_final_ratio} "
                f"and {self.warmup_epochs}"
            )
        if self.device not in DEVICES:
            problems.append(f"device={self.device!r} is not one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("batch_size", "epochs", "patience", "lr_decay_patience", "grad_clip"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.seed < 2**32:  # numpy's seeding takes 32-bit seeds
            problems.append(f"seed must be in [0, 2**32), got {self.seed}")
        if self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers}")
        if self.lr <= 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.lr_decay_factor <= 1.0 or self.weight_decay < 0:
            problems.append("lr_decay_factor must be in (0, 1] and weight_decay >= 0")
        return problems


@dataclass(frozen=True)
class AugmentConfig(_Section):
    """Training-time augmentation, all off by default (the original trains on clean, whole inputs)."""

    # chance that a training utterance gets noise, each epoch anew. It is mixed into the waveform before the log-mel,
    # as at evaluation (avasr.augment), so the training set keeps its clean speech in memory (64 kB per second), or
    # a streamed one reads it with each item and holds a sample of voices for babble
    noise_prob: float = 0.0
    noise_kinds: tuple[str, ...] = NOISE_KINDS  # drawn uniformly; babble is other training speakers' speech
    noise_snr_db: tuple[float, ...] = (-10.0, 20.0)  # (low, high): each noisy utterance's SNR, drawn uniformly
    # > 0: each utterance's mel axis stretched or squeezed by a factor drawn uniformly from 1 -/+ freq_warp, which
    # moves its formants as another vocal tract length would (VTLP); 0: off
    freq_warp: float = 0.0
    # > 0: SpecAugment's time warp on both streams alike: a point inside the utterance moved by up to this many video
    # frames (4 mel frames each), the part before it stretched and the part after squeezed, or the reverse, so that
    # the speech runs faster and slower in places as another speaker's or engine's timing would; 0: off
    time_warp: int = 0
    freq_masks: int = 0  # SpecAugment frequency masks per utterance, each 0..freq_mask_bands mel bands wide
    freq_mask_bands: int = 8
    audio_time_masks: int = 0  # time masks per utterance on the log-mel, each 0..time_mask_frames long
    video_time_masks: int = 0  # the same on the lip crops (frames blanked), drawn independently of the audio's
    time_mask_frames: int = 10  # in video frames (0.4 s at 25 fps; 4 mel frames each)
    # chance that an utterance's audio or its video (either, equally likely) is blanked whole: one model then serves
    # audio-only, video-only and audio-visual input, and learns to lean on the lips when the sound goes
    modality_dropout: float = 0.0

    def check(self) -> list[str]:
        problems = []
        for name in ("noise_prob", "modality_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.freq_warp < 1.0:
            problems.append(f"freq_warp must be in [0, 1), got {self.freq_warp}")
        unknown_noise = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if unknown_noise or not self.noise_kinds:
            problems.append(f"noise_kinds must be some of {', '.join(NOISE_KINDS)}, got {self.noise_kinds}")
        if len(self.noise_snr_db) != 2 or self.noise_snr_db[0] > self.noise_snr_db[1]:
            problems.append(f"noise_snr_db needs (low, high) with low <= high, got {self.noise_snr_db}")
        for name in (
            "freq_masks",
            "freq_mask_bands",
            "audio_time_masks",
            "video_time_masks",
            "time_mask_frames",
            "time_warp",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        return problems


# --- the composition: a training run's whole configuration ----------------------------------------------------
@dataclass(frozen=True)
class Config(AugmentConfig, TrainConfig, DataConfig, InferenceConfig):
    """A training run's configuration: the sections above, flat. Flat keys keep CLI flags (`--fusion`), Tune spaces
    (`{"lr": ...}`), MLflow params and checkpoints readable; each component takes only its section
    (`config.model`, `config.features`, `config.decoding`, `config.inference`)."""

    extra: dict = field(default_factory=dict, compare=False)  # free-form tags (e.g. corpus id); never read by code

    @property
    def inference(self) -> InferenceConfig:
        return InferenceConfig.of(self)

    @classmethod
    def from_file(cls, path: str | Path, base: Config | None = None) -> Config:
        """The fields in a JSON file over `base` (the defaults when None)."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read configuration: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a configuration file must hold one JSON object")
        return cls.from_dict({**base.to_dict(), **values} if base else values)


SECTIONS = (ModelConfig, FeatureConfig, DecodeOptions, DataConfig, TrainConfig, AugmentConfig)  # --help's order


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


def _coerce(value, hint):
    """Accept a value of the field's type; ints for floats; lists for tuples. Refuse everything else."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(_coerce(v, item_type) for v in value)
    if hint is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)  # Tune's quantised spaces give 16.0
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise TypeError


# --- command line ----------------------------------------------------------------------------------------------
_CLI_FIELDS = {"extra"}  # not settable from the command line


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--<field-name>` (dashes) for every config field, one group per section; defaults stay None so only
    given flags override."""
    from avasr.cli import add_dataclass_arguments  # avasr.cli is about entry points: imported only by them

    choices = {
        "fusion": FUSIONS,
        "time_padding": TIME_PADDINGS,
        "decoder": DECODERS,
        "device": DEVICES,
        "modalities": MODALITIES,
        "lr_schedule": LR_SCHEDULES,
        "noise_kinds": NOISE_KINDS,
    }
    for section in SECTIONS:
        group = parser.add_argument_group(f"{_section_title(section)} (defaults: the original design)")
        own = [f.name for f in dataclasses.fields(section) if f.name not in _CLI_FIELDS]
        add_dataclass_arguments(group, section, fields=own, choices=choices, keep_defaults=False)


def _section_title(section: type) -> str:
    return {
        ModelConfig: "model",
        FeatureConfig: "features",
        DecodeOptions: "decoding",
        DataConfig: "data",
        TrainConfig: "training",
        AugmentConfig: "augmentation",
    }[section]


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """`--config FILE` (if the parser has it) then the explicitly given `--field` flags override `base` (a resumed
    checkpoint's config) or the defaults."""
    config = base or Config()
    config_file = getattr(args, "config", None)
    if config_file:
        config = Config.from_file(config_file, base=config)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name not in _CLI_FIELDS and getattr(args, f.name, None) is not None
    }
    return config.replace(**overrides) if overrides else config
