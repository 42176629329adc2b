"""Transcribe files with a trained model: `AVASRInference(model, device).transcribe(audio_path, video_path)`.

    engine = AVASRInference("outputs/train/best_model.pth")           # PyTorch on the CPU ("cuda" on a GPU)
    engine = AVASRInference("outputs/sweeps/NAME/champion.onnx")      # onnxruntime, CPU
    engine = AVASRInference("models:/avasr@champion")                 # the registered champion (set MLflow's URIs)
    engine.transcribe("clip.wav", "clip.mp4", transcript="bin blue at f two now")
    # {"transcript": "bin blue at f two now", "wer": 0.0, "cer": 0.0, "latency_ms": 131.2, "input": "audio+video",
    #  "timings": {"audio_ms": 4.1, "video_ms": 38.0, "lips_ms": 52.3, "model_ms": 33.9, "decode_ms": 0.4}}
    engine.transcribe("clip.wav", None)    # audio alone; engine.transcribe(None, "clip.mp4"): the lips alone

The files go through the training pipeline itself (avasr.data: log-mel, frame-rate conversion, Haar lip crops,
standardisation), so a deployed model sees exactly what it was trained on. `timings` breaks `latency_ms` (files on
disk -> text) down by stage: audio (decode + resample + log-mel), video (decode + frame-rate conversion), lips (face
detection + crops), model, decode (CTC). Threads: 1 by default for onnxruntime and PyTorch alike (see
avasr.ship.latency: one core's latency, stable on a shared machine).

A missing stream is an input, not an error: the model gets zeros for it, as training's modality dropout and
`modalities` blanking feed it. A video in which no face is found runs on the audio alone, with a warning; the
result's "input" says which streams the model got.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnx
import torch

from avasr.checkpoint import load_model
from avasr.config import AUDIO_ONLY, AUDIO_TIME_DOWNSAMPLING, AUDIO_VISUAL, VIDEO_ONLY, InferenceConfig
from avasr.data.audio import load_log_mel
from avasr.data.lips import LipCropper, NoFaceError, default_cropper
from avasr.data.manifest import read_manifest
from avasr.data.video import read_gray_frames, resample_frames
from avasr.decode import Lexicon, decode
from avasr.device import NO_CUDA
from avasr.errors import AvasrError
from avasr.features import (
    align_audio_to_video,
    check_durations,
    keep_modalities,
    lip_crops_to_tensor,
    video_frames_of_audio,
)
from avasr.metrics import character_error_rate, word_error_rate
from avasr.ship.export import as_numpy, check_parity, cpu_session, export_onnx, read_config, run_session
from avasr.ship.latency import DEFAULT_THREADS, MS_PER_S
from avasr.ship.registry import MODEL_URI_SCHEMES, is_model_uri, load_onnx_model
from avasr.text import normalize

DEVICES = ("cpu", "cuda", "onnx")
CHECKPOINT_SUFFIXES = (".pth", ".pt")
ONNX_SUFFIX = ".onnx"
STAGES = ("audio_ms", "video_ms", "lips_ms", "model_ms", "decode_ms")


class InferenceError(AvasrError, ValueError):
    """A model source or device that cannot be used; the message says what it expected."""


class Backend(Protocol):
    def log_probs(self, audio: torch.Tensor, video: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, n_mels, 4T), video (B, T, 1, H, W), lengths (B,) -> log-probs (B, T, 29) on the CPU."""
        ...


class TorchBackend:
    def __init__(self, model: torch.nn.Module, device: str):
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def log_probs(self, audio, video, lengths):
        out = self.model(audio.to(self.device), video.to(self.device), lengths.to(self.device))  # (B, T, C)
        return out.cpu()


class OnnxBackend:
    def __init__(self, model: onnx.ModelProto, where: str, threads: int):
        self.session = cpu_session(model.SerializeToString(), threads, where)  # checks the input names

    def log_probs(self, audio, video, lengths):
        return torch.from_numpy(run_session(self.session, audio, video, lengths))  # (B, T, C)


@dataclass(frozen=True)
class LoadedModel:
    backend: Backend
    config: InferenceConfig  # a checkpoint gives its whole Config, an ONNX file the inference part
    torch_model: torch.nn.Module | None  # for export_onnx; None when loaded from ONNX
    onnx_model: onnx.ModelProto | None


def load(source: str | Path, device: str, threads: int) -> LoadedModel:
    """A .pth checkpoint, an .onnx file or an MLflow model URI, on `device` ("cpu", "cuda" or "onnx")."""
    if device not in DEVICES:
        raise InferenceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    text = str(source)
    if is_model_uri(text) or text.endswith(ONNX_SUFFIX):
        if device == "cuda":
            raise InferenceError(
                f"{text}: ONNX models run on onnxruntime's CPU provider here; use device='onnx' "
                f"(or 'cpu'), or a .pth checkpoint on 'cuda'"
            )
        proto = load_onnx_model(text) if is_model_uri(text) else _read_onnx(Path(text))
        return LoadedModel(OnnxBackend(proto, text, threads), read_config(proto, text), None, proto)
    if Path(text).suffix not in CHECKPOINT_SUFFIXES:
        raise InferenceError(
            f"{text}: unknown model format; pass a {'/'.join(CHECKPOINT_SUFFIXES)} checkpoint, an "
            f"{ONNX_SUFFIX} file or an MLflow model URI ({', '.join(MODEL_URI_SCHEMES)})"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise InferenceError(
            f"{text}: device='cuda' was asked for but {NO_CUDA}: use device='cpu' or 'onnx' (--device cpu) on this "
            "machine, or run on one with an NVIDIA GPU and a CUDA build of torch"
        )
    model, config = load_model(text)
    if device == "onnx":
        with tempfile.TemporaryDirectory() as tmp:
            proto = onnx.load_model(str(export_onnx(model, config, Path(tmp) / "model.onnx")))
        return LoadedModel(OnnxBackend(proto, text, threads), config, model, proto)
    return LoadedModel(TorchBackend(model, device), config, model, None)


def _read_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise InferenceError(f"{path}: no such ONNX file (MLflow URIs start with {', '.join(MODEL_URI_SCHEMES)})")
    try:
        return onnx.load_model(str(path))
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise InferenceError(f"{path}: not a readable ONNX model: {e}") from None


@dataclass(frozen=True)
class InferenceOptions:
    # "cpu" or "cuda": a .pth checkpoint in PyTorch; "onnx": onnxruntime on the CPU (a .pth is exported first).
    # An .onnx file or an MLflow URI always runs in onnxruntime ("cpu" is taken to mean that).
    device: str = "cpu"
    decoder: str = ""  # greedy or beam; empty: the model's own (its training config's)
    beam_size: int = 0  # beams of beam search; 0: the model's own
    lexicon: str = ""  # word list restricting beam search to its words (implies --decoder beam)
    threads: int = DEFAULT_THREADS  # PyTorch's or onnxruntime's threads; 1: one core's latency, stable when shared


class AVASRInference:
    """One model ready to transcribe audio + video files (see the module docstring)."""

    def __init__(self, model_path: str | Path, device: str = "cpu", cropper: LipCropper | None = None, **options):
        """`options`: the other fields of InferenceOptions (decoder, beam_size, lexicon, threads)."""
        self.options = InferenceOptions(device=device, **options)
        with _threads(self.options.threads):
            loaded = load(model_path, device, self.options.threads)
        self.source = str(model_path)
        self.config = loaded.config.with_overrides(self.options.decoder, self.options.beam_size, self.options.lexicon)
        self.lexicon = Lexicon.from_file(self.config.lexicon) if self.config.lexicon else None
        self.backend = loaded.backend
        self._loaded = loaded
        self.cropper = cropper or default_cropper(self.config)

    # --- files -> model inputs ---------------------------------------------------------------------------------
    def features(
        self, audio_path: str | Path | None, video_path: str | Path | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict, str]:
        """Files -> audio (1, 1, n_mels, 4T), video (1, T, 1, H, W), the stages' times in ms (0 for a stage
        without its file) and the streams the model gets ("audio+video", "audio" or "video"; a missing one is zeros).

        Raises AudioError / VideoError naming the file, as training does; NoFaceError only without audio to fall
        back on (or for a video-only model)."""
        if audio_path is None and video_path is None:
            raise InferenceError("transcribe needs an audio file, a video file or both; got neither")
        timings = dict.fromkeys(("audio_ms", "video_ms", "lips_ms"), 0.0)
        mel = crops = None
        if audio_path is not None:
            with _timed(timings, "audio_ms"):
                mel = load_log_mel(audio_path, self.config)  # (n_mels, T_a)
        if video_path is not None:
            crops = self.lip_crops(video_path, timings, fall_back=mel is not None)  # (T_v, S, S) or None
        if crops is None:  # audio alone
            frames = video_frames_of_audio(mel.shape[1], self.config)
            video = torch.zeros(1, frames, 1, self.config.lip_size, self.config.lip_size)  # (1, T_v, 1, S, S)
        else:
            video = lip_crops_to_tensor(torch.from_numpy(crops))[None, :, None]  # (1, T_v, 1, S, S)
        frames = video.shape[1]
        if mel is None:  # the lips alone
            audio = torch.zeros(1, 1, self.config.n_mels, AUDIO_TIME_DOWNSAMPLING * frames)  # (1, 1, n_mels, 4 T_v)
        else:
            if crops is not None:
                check_durations(mel.shape[1], frames, self.config, audio_path, video_path)
            audio = align_audio_to_video(mel, frames, self.config)[None, None]  # (1, 1, n_mels, 4 T_v)
        streams = AUDIO_VISUAL if mel is not None and crops is not None else AUDIO_ONLY if crops is None else VIDEO_ONLY
        return (*keep_modalities(audio, video, self.config.modalities), timings, streams)

    def lip_crops(self, video_path: str | Path, timings: dict, fall_back: bool) -> np.ndarray | None:
        """The video's lip crops, shape = (T_v, S, S) uint8; None (with a warning) when no face is found and
        `fall_back` says there is audio to run on, unless the model reads lips only."""
        with _timed(timings, "video_ms"):
            frames, fps = read_gray_frames(video_path)  # (T, H, W)
            frames = resample_frames(frames, fps, self.config.fps)
        try:
            with _timed(timings, "lips_ms"):
                return self.cropper.crop(frames, self.config.lip_size, where=str(video_path)).crops
        except NoFaceError as e:
            if not fall_back or self.config.modalities == VIDEO_ONLY:
                raise
            warnings.warn(f"{e}: transcribing the audio alone", stacklevel=3)
            return None

    # --- transcription -----------------------------------------------------------------------------------------
    def transcribe(
        self, audio_path: str | Path | None, video_path: str | Path | None, transcript: str | None = None
    ) -> dict:
        """One utterance from files (either may be None) -> {"transcript", "wer", "cer", "latency_ms", "timings",
        "input"}. wer and cer are None without a reference `transcript`; "input" is the streams the model got."""
        with _threads(self.options.threads):
            started = time.perf_counter()
            audio, video, timings, streams = self.features(audio_path, video_path)
            lengths = torch.tensor([video.shape[1]])
            with _timed(timings, "model_ms"):
                log_probs = self.backend.log_probs(audio, video, lengths)  # (1, T, C)
            with _timed(timings, "decode_ms"):
                text = self.decode(log_probs, lengths)[0]
            latency_ms = (time.perf_counter() - started) * MS_PER_S
        result = {
            "transcript": text,
            "wer": None,
            "cer": None,
            "latency_ms": latency_ms,
            "timings": {k: timings[k] for k in STAGES},
            "input": streams,
        }
        if transcript is not None:
            where = f"the reference of {audio_path or video_path}"
            reference = normalize(transcript, where=where)  # as manifests' transcripts
            result |= {"wer": word_error_rate([reference], [text]), "cer": character_error_rate([reference], [text])}
        return result

    def transcribe_manifest(self, path: str | Path) -> Iterator[dict]:
        """Every line of a manifest, in order: transcribe's result plus "id", "reference", "where".

        A bad manifest raises ManifestError listing its bad lines. An utterance whose files cannot be used
        (unreadable, durations that disagree) gives {"id", "where", "error"} and the others go on; one whose video
        has no face runs on its audio alone (its "input" says so)."""
        for entry in read_manifest(path):
            base = {"id": entry.utterance_id, "where": entry.where}
            try:
                result = self.transcribe(entry.audio_path, entry.video_path, entry.transcript)
            except AvasrError as e:  # AudioError, VideoError: each names its file
                yield base | {"error": str(e)}
                continue
            except OSError as e:  # a file that vanished or became unreadable after the manifest was read
                yield base | {"error": f"cannot read {e.filename}: {e.strerror}" if e.filename else str(e)}
                continue
            yield base | {"reference": entry.transcript} | result

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return decode(log_probs, lengths, self.config.decoder, self.config.beam_size, self.lexicon)

    def log_probs(self, audio, video, lengths=None) -> torch.Tensor:
        """Model inputs (tensors or arrays; see avasr.ship.export) -> log-probs (B, T, 29); lengths default to full."""
        audio = torch.as_tensor(as_numpy(audio), dtype=torch.float32)
        video = torch.as_tensor(as_numpy(video), dtype=torch.float32)
        if lengths is None:
            lengths = torch.full((video.shape[0],), video.shape[1], dtype=torch.long)
        with _threads(self.options.threads):
            return self.backend.log_probs(audio, video, torch.as_tensor(as_numpy(lengths), dtype=torch.long))

    # --- shipping ----------------------------------------------------------------------------------------------
    def export_onnx(self, output_path: str | Path) -> Path:
        """This model as a .onnx file (checked against PyTorch when it was loaded from a checkpoint)."""
        output_path = Path(output_path)
        if self._loaded.torch_model is None:
            output_path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save_model(self._loaded.onnx_model, str(output_path))
            return output_path
        export_onnx(self._loaded.torch_model, self._loaded.config, output_path)
        check_parity(self._loaded.torch_model, output_path)
        return output_path


def corpus_scores(results: list[dict]) -> dict:
    """Corpus WER/CER over a manifest's transcribed utterances, with the count of those that failed."""
    done = [r for r in results if "error" not in r]
    refs, hyps = [r["reference"] for r in done], [r["transcript"] for r in done]
    scores = {
        "utterances": len(done),
        "failed": len(results) - len(done),
        "wer": None,
        "cer": None,
        "latency_ms_mean": None,
        "latency_ms_p50": None,  # None, not NaN: the CLI prints JSON
        "inputs": dict(Counter(r["input"] for r in done)),
    }  # how many ran on both streams, on one
    if done:
        latencies = np.array([r["latency_ms"] for r in done])
        scores |= {
            "wer": word_error_rate(refs, hyps),
            "cer": character_error_rate(refs, hyps),
            "latency_ms_mean": float(latencies.mean()),
            "latency_ms_p50": float(np.median(latencies)),
        }
    return scores


@contextmanager
def _timed(timings: dict, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = (time.perf_counter() - started) * MS_PER_S


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads and OpenCV's (face detection) set for the block, restored afterwards; 0 leaves
    both libraries' defaults. Both are process-wide settings: engines with different thread counts must not
    transcribe from different Python threads at once."""
    previous = torch.get_num_threads(), cv2.getNumThreads()
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        cv2.setNumThreads(previous[1])
