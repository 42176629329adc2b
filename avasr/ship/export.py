"""Shipping a trained model: ONNX export with dynamic batch and length, and its parity with PyTorch in onnxruntime.
Registration in MLflow is `avasr.ship.registry`; transcribing files is `avasr.ship.inference`.

The inputs keep the original design's names, `audio_features` and `video_features`, plus `lengths`. A batch-1
deployment does not need lengths (it passes [T]), but a batched one does: without it padded frames would leak into
their neighbours through the temporal convolutions and the attention fusion, so a batched ONNX model would
disagree with PyTorch. One graph serves both; a feed without `lengths` gets onnxruntime's "Required inputs
(['lengths']) are missing", and the input's doc string in the graph says what to pass.

    inputs:  audio_features (B, 1, n_mels, 4 * T) float32, video_features (B, T, 1, H, W) float32, lengths (B,) int64
    output:  log_probs (B, T, 29) float32

B and T are dynamic; the audio time axis is derived as 4 * T, so a mismatched pair cannot even be described.
n_mels, H and W are fixed by the trained model and stay constants in the graph.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.export import Dim

from avasr.config import AUDIO_TIME_DOWNSAMPLING, Config, ConfigError, InferenceConfig, with_earlier_defaults
from avasr.decode import greedy_decode
from avasr.errors import AvasrError
from avasr.text import SYMBOLS

AUDIO_INPUT, VIDEO_INPUT, LENGTHS_INPUT = "audio_features", "video_features", "lengths"
INPUT_NAMES = (AUDIO_INPUT, VIDEO_INPUT, LENGTHS_INPUT)
OUTPUT_NAME = "log_probs"
INPUT_DOCS = {  # kept in the graph: what a user who opens it (or reads onnxruntime's error) needs to know
    AUDIO_INPUT: "log-mel features (B, 1, n_mels, 4 * T) float32, standardised per utterance (avasr.data.audio)",
    VIDEO_INPUT: "lip crops (B, T, 1, H, W) float32, standardised (avasr.data.dataset.lip_crops_to_tensor)",
    LENGTHS_INPUT: "valid video frames of each utterance (B,) int64; for one unpadded utterance pass [T]",
}
# Example sizes for tracing. Both must be >= 2 (a size-1 dimension is specialised to a constant) and the frame
# count is one that parity never tests, so a length baked into the graph by mistake shows up as a failure.
EXAMPLE_BATCH = 2
EXAMPLE_FRAMES = 7
MAX_BATCH = 1024
MAX_FRAMES = 25 * 600  # ten minutes at 25 fps: a bound for the exporter's shape reasoning, not checked at run time
PARITY_ATOL = 1e-4  # max |log p_onnx - log p_torch|; measured float32 differences are ~1e-6 (see tests)
PARITY_FRAMES = (50, 125, 200)  # 2 s, the original's 5 s and 8 s at 25 fps; none equals EXAMPLE_FRAMES
PARITY_BATCHES = (1, 3)
PARITY_PADDING = 9  # in a batch, utterances after the first are this many frames shorter: masking is exercised
PROVIDERS = ("CPUExecutionProvider",)
CONFIG_METADATA_KEY = "avasr_config"  # InferenceConfig as JSON (model, features, decoding) in the metadata
VOCABULARY_METADATA_KEY = "avasr_vocabulary"
# The exporter warns that "batch" names one dimension of three inputs; it is one dimension, so that is intended.
SHARED_DIM_WARNING = r".*axis name: batch will not be used"


class ExportError(AvasrError, RuntimeError):
    """The model could not be exported, or the exported file is not a valid ONNX model."""


class ParityError(AvasrError, AssertionError):
    """onnxruntime and PyTorch disagree beyond PARITY_ATOL, or their greedy transcripts differ.

    `report` holds the numbers (None when the output shapes already differ). An AvasrError: the verdict that this
    model cannot ship, numbers included, which a traceback would not add to; the sweep records it and goes on."""

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


# --- export ------------------------------------------------------------------------------------------------------
def example_inputs(
    config: InferenceConfig,
    batch: int,
    frames: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random model inputs: audio (B, 1, n_mels, 4T), video (B, T, 1, H, W), lengths (B,) int64.

    The first utterance is full length, the others PARITY_PADDING frames shorter (at least 1).
    """
    audio = torch.randn(batch, 1, config.n_mels, AUDIO_TIME_DOWNSAMPLING * frames, generator=generator)
    video = torch.randn(batch, frames, 1, config.lip_size, config.lip_size, generator=generator)
    lengths = torch.tensor([frames] + [max(1, frames - PARITY_PADDING)] * (batch - 1), dtype=torch.long)
    return audio.to(device), video.to(device), lengths.to(device)


def dynamic_shapes() -> dict[str, dict[int, Dim]]:
    """Batch and video frames are dynamic; audio time is derived as AUDIO_TIME_DOWNSAMPLING * frames."""
    batch = Dim("batch", min=1, max=MAX_BATCH)
    frames = Dim("frames", min=2, max=MAX_FRAMES)
    return {
        AUDIO_INPUT: {0: batch, 3: AUDIO_TIME_DOWNSAMPLING * frames},
        VIDEO_INPUT: {0: batch, 1: frames},
        LENGTHS_INPUT: {0: batch},
    }


def export_onnx(model: nn.Module, config: InferenceConfig, path: str | Path) -> Path:
    """Export `model` (built from `config`) to one self-contained .onnx file with dynamic batch and length.

    The model is traced from a CPU copy in eval mode (`cpu_copy`): `model` keeps its device, its train/eval flag
    and its weights, and the graph is the same from a model trained on a GPU. The weights are kept inside the file
    (a < 5M-parameter model is far below ONNX's 2 GB limit), and the config and vocabulary are stored in its
    metadata so that a deployed file says what it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = example_inputs(config, EXAMPLE_BATCH, EXAMPLE_FRAMES)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SHARED_DIM_WARNING)
            program = torch.onnx.export(
                _NamedInputs(cpu_copy(model)).eval(),
                args,
                dynamo=True,
                dynamic_shapes=dynamic_shapes(),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; the caller needs to know which model failed
        raise ExportError(f"{path}: torch.onnx.export failed for fusion={config.fusion!r}: {e}") from e
    proto = program.model_proto
    for value in proto.graph.input:
        value.doc_string = INPUT_DOCS[value.name]
    stored = json.dumps(InferenceConfig.of(config).to_dict())  # never training paths or settings
    add_metadata(proto, {CONFIG_METADATA_KEY: stored, VOCABULARY_METADATA_KEY: json.dumps(list(SYMBOLS))})
    onnx.save_model(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path}: exported model does not pass the ONNX checker: {e}") from e
    return path


def cpu_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the CPU in eval mode, for export, parity and latency: the model itself may be training
    on a GPU, and CUDA's TF32 convolutions would blur parity."""
    return copy.deepcopy(model).to("cpu").eval()


class _NamedInputs(nn.Module):
    """The model with the graph's input names as its forward's argument names (the exporter takes them from there)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio_features: torch.Tensor, video_features: torch.Tensor, lengths: torch.Tensor):
        return self.model(audio_features, video_features, lengths)


def add_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_config(onnx_model: str | Path | onnx.ModelProto, where: str | None = None) -> InferenceConfig:
    """The model, features and decoding stored in an exported file's (or loaded graph's) metadata. A file whose
    metadata holds a whole training Config (as older avasr exports do) gives its InferenceConfig part."""
    proto = (
        onnx_model
        if isinstance(onnx_model, onnx.ModelProto)
        else (onnx.load_model(str(onnx_model), load_external_data=False))
    )
    where = where or str(onnx_model if not isinstance(onnx_model, onnx.ModelProto) else "ONNX model")
    metadata = {p.key: p.value for p in proto.metadata_props}
    if CONFIG_METADATA_KEY not in metadata:
        raise ExportError(f"{where}: no {CONFIG_METADATA_KEY!r} metadata (not written by avasr.ship.export?)")
    stored = json.loads(metadata[CONFIG_METADATA_KEY])
    wanted = {f.name for f in dataclasses.fields(InferenceConfig)}
    training_only = {f.name for f in dataclasses.fields(Config)} - wanted
    try:
        kept = {k: v for k, v in stored.items() if k not in training_only}
        return InferenceConfig.from_dict(with_earlier_defaults(kept))
    except ConfigError as e:
        raise ExportError(f"{where}: its {CONFIG_METADATA_KEY!r} metadata is not an avasr model's: {e}") from None


# --- parity ------------------------------------------------------------------------------------------------------
def cpu_session(model: str | Path | bytes, threads: int = 0, where: str | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session of an avasr model from a path or serialised bytes; threads = 0 lets onnxruntime
    decide. A graph with other inputs (e.g. exported before they took the original's names) raises ExportError
    naming `where` (default: the path)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=options, providers=list(PROVIDERS))
    names = tuple(i.name for i in session.get_inputs())
    if names != INPUT_NAMES:
        where = where or (str(model) if not isinstance(model, bytes) else "ONNX model")
        raise ExportError(
            f"{where}: the graph's inputs are {', '.join(names)}; avasr models take "
            f"{', '.join(INPUT_NAMES)} (re-export it with avasr.ship.export or export_best.py)"
        )
    return session


@dataclass(frozen=True)
class ParityCase:
    batch: int
    frames: int
    max_abs_diff: float  # over every frame, padded ones included
    torch_texts: tuple[str, ...]
    onnx_texts: tuple[str, ...]

    @property
    def texts_equal(self) -> bool:
        return self.torch_texts == self.onnx_texts


@dataclass(frozen=True)
class ParityReport:
    cases: tuple[ParityCase, ...]
    atol: float

    @property
    def max_abs_diff(self) -> float:
        return max(case.max_abs_diff for case in self.cases)

    @property
    def texts_equal(self) -> bool:
        return all(case.texts_equal for case in self.cases)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.texts_equal

    def summary(self) -> str:
        lines = [
            f"parity: max |diff| {self.max_abs_diff:.3g} (tolerance {self.atol:g}), texts equal: {self.texts_equal}"
        ]
        for c in self.cases:
            lines.append(
                f"  batch {c.batch}, {c.frames} frames: max |diff| {c.max_abs_diff:.3g}"
                + ("" if c.texts_equal else f", texts differ: torch {c.torch_texts} vs onnx {c.onnx_texts}")
            )
        return "\n".join(lines)


@torch.no_grad()
def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    frames: Sequence[int] = PARITY_FRAMES,
    batches: Sequence[int] = PARITY_BATCHES,
    atol: float = PARITY_ATOL,
    inputs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = (),
    seed: int = 0,
) -> ParityReport:
    """Run PyTorch (a CPU copy in eval mode) and onnxruntime on the same inputs and compare log-probs and greedy texts.

    Random inputs at every (batch, frames) pair, plus any given `inputs` (audio, video, lengths) — e.g. a real
    batch, on which a trained model's texts are not empty. Raises ParityError with the numbers when a log-prob
    differs by more than `atol` or a greedy transcript differs; returns the report otherwise.
    """
    config = read_config(onnx_path)
    session = cpu_session(Path(onnx_path))
    model = cpu_copy(model)  # the caller's model keeps its device and mode
    generator = torch.Generator().manual_seed(seed)
    cases = [*(example_inputs(config, b, t, generator=generator) for t in frames for b in batches), *inputs]
    report = ParityReport(tuple(compare_one(model, session, *(x.cpu() for x in case)) for case in cases), atol)
    if not report.passed:
        raise ParityError(f"{onnx_path}: onnxruntime disagrees with PyTorch\n{report.summary()}", report)
    return report


def compare_one(
    model: nn.Module, session: ort.InferenceSession, audio: torch.Tensor, video: torch.Tensor, lengths: torch.Tensor
) -> ParityCase:
    expected = model(audio, video, lengths)  # (B, T, C)
    actual = torch.from_numpy(run_session(session, audio, video, lengths))  # (B, T, C)
    if actual.shape != expected.shape:
        raise ParityError(f"onnxruntime output shape {tuple(actual.shape)} != PyTorch {tuple(expected.shape)}")
    return ParityCase(
        batch=audio.shape[0],
        frames=video.shape[1],
        max_abs_diff=(actual - expected).abs().max().item(),
        torch_texts=tuple(greedy_decode(expected, lengths)),
        onnx_texts=tuple(greedy_decode(actual, lengths)),
    )


def session_feeds(audio, video, lengths) -> dict[str, np.ndarray]:
    """Tensors or arrays -> the graph's inputs by name, in the dtypes it takes."""
    return {
        AUDIO_INPUT: np.ascontiguousarray(as_numpy(audio), dtype=np.float32),
        VIDEO_INPUT: np.ascontiguousarray(as_numpy(video), dtype=np.float32),
        LENGTHS_INPUT: np.ascontiguousarray(as_numpy(lengths), dtype=np.int64),
    }


def run_session(session: ort.InferenceSession, audio, video, lengths) -> np.ndarray:
    """Tensors or arrays in, log-probs out: shape = (B, T, 29)."""
    return session.run([OUTPUT_NAME], session_feeds(audio, video, lengths))[0]


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
