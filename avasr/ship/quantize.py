"""int8 ONNX models from an fp32 export: onnxruntime's static quantization (QDQ, per-channel weights, activations
calibrated on training utterances) or its dynamic quantization (weights only; activations quantized at run time).

    static   every Conv/MatMul/Gemm runs in int8 with scales fixed in advance from calibration data; QDQ format keeps
             the graph a plain ONNX graph with QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into
             integer kernels. Needs representative inputs: `calibration_feeds` takes them from a manifest.
    dynamic  the same ops' weights in int8, activation scales computed per call: no calibration, but onnxruntime
             runs its convolutions as ConvInteger, which on this model is slower than fp32 (3x, see the benchmark).

`benchmarks/latency.py` measures both against fp32; `QUANTIZATIONS` lists them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from avasr.config import Config
from avasr.data.dataset import collate, load_all
from avasr.data.manifest import read_manifest
from avasr.errors import AvasrError
from avasr.ship.export import CONFIG_METADATA_KEY, VOCABULARY_METADATA_KEY, add_metadata, session_feeds

QUANTIZATIONS = ("static", "dynamic")
CALIBRATION_UTTERANCES = 32  # enough to pin every activation's range; more only slows quantization down
CALIBRATION_READ_FACTOR = 2  # utterances read per one wanted: some may be unusable (no face, too short)
# 7-bit weights. Without VNNI (AVX2 only, as on this machine's EPYC) onnxruntime's u8 x s8 kernels add pairs of
# products in 16 bits (vpmaddubsw), which saturate with 8-bit weights: measured on the default model, max |log-prob
# error| 0.42 and 62 % of frames' argmax agreeing with fp32 without it, 0.05 and 99.7 % with it, at the same speed.
REDUCE_RANGE = True
# Only the heavy ops. Quantizing everything (the masks' Where, the fusion's gates, LayerNorm inputs...) as well was
# ~10 % faster on the default model but took a trained smoke model's test WER from 0.331 (fp32) to 0.498; with these
# ops alone it stays 0.331.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


class QuantizationError(AvasrError, RuntimeError):
    """onnxruntime could not quantize the model; the message names the file."""


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_feeds(
    manifest: str | Path, config: Config, count: int = CALIBRATION_UTTERANCES
) -> list[dict[str, np.ndarray]]:
    """Up to `count` usable utterances from the start of a manifest as batch-1 session feeds (the deployed shape),
    each as the model saw it in training (`config.modalities`). Unusable files are passed over."""
    entries = read_manifest(manifest)[: CALIBRATION_READ_FACTOR * count]  # room for skips, without featurising all
    loaded = [
        u
        for u in load_all(entries, config.replace(data_workers=1), "calibration", progress=False)
        if not isinstance(u, Exception)
    ]
    if not loaded:
        raise QuantizationError(f"{manifest}: none of its first {len(entries)} utterances is usable for calibration")
    return [_feeds_of(collate([u]).keep_modalities(config.modalities)) for u in loaded[:count]]


def _feeds_of(batch) -> dict[str, np.ndarray]:
    return session_feeds(batch.audio, batch.video, batch.video_lengths)


def quantize(
    fp32_path: str | Path, int8_path: str | Path, method: str = "static", feeds: Sequence[dict[str, np.ndarray]] = ()
) -> Path:
    """fp32 .onnx -> int8 .onnx by `method` ("static" needs `feeds`); keeps the config and vocabulary metadata."""
    if method not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {method!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if method == "static" and not feeds:
        raise ValueError("static quantization needs calibration feeds (calibration_feeds(manifest, config))")
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    try:
        metadata = {p.key: p.value for p in onnx.load_model(str(fp32_path), load_external_data=False).metadata_props}
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"  # shapes inferred and graph optimised: what the quantizer expects
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            if method == "static":
                quantize_static(
                    str(prepared),
                    str(int8_path),
                    _Feeds(feeds),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=REDUCE_RANGE,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            else:
                quantize_dynamic(
                    str(prepared),
                    str(int8_path),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=REDUCE_RANGE,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                )
    except Exception as e:  # the quantizer raises anything from protobuf to KeyError; say which model failed
        raise QuantizationError(f"{fp32_path}: {method} int8 quantization failed: {e}") from e
    proto = onnx.load_model(str(int8_path))
    kept = {p.key for p in proto.metadata_props}
    add_metadata(
        proto,
        {k: metadata[k] for k in (CONFIG_METADATA_KEY, VOCABULARY_METADATA_KEY) if k in metadata and k not in kept},
    )
    onnx.save_model(proto, str(int8_path))
    return int8_path
