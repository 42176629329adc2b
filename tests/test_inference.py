"""AVASRInference: files on disk -> text through a .pth, an .onnx file and a models:/ URI alike; timings; errors."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch

from avasr.checkpoint import CheckpointError, save_checkpoint
from avasr.config import AUDIO_TIME_DOWNSAMPLING
from avasr.data.audio import AudioError
from avasr.data.dataset import collate, load_utterance
from avasr.data.lips import NoFaceError
from avasr.data.manifest import read_manifest, write_manifest
from avasr.metrics import character_error_rate, word_error_rate
from avasr.model import build_model
from avasr.ship.export import ExportError, export_onnx, read_config
from avasr.ship.inference import STAGES, AVASRInference, InferenceError, corpus_scores
from avasr.ship.quantize import QUANTIZATIONS, calibration_feeds, quantize
from avasr.ship.registry import RegistryError, register_onnx
from avasr.sweep.tracking import global_uris
from avasr.text import BLANK_ID
from tests.media import write_clip
from tests.synthetic import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "transcribe.py"
CLIP_SECONDS = (1.2, 2.0)
BLANK_PENALTY = 3.0  # an untrained model with its blank pushed down emits input-dependent letters on every clip
# int8 against fp32 on the same features (reduce_range, see avasr.ship.quantize); measured on these clips with TINY:
# max |diff| 0.02-0.05, every frame's argmax agreeing (on this AVX2 CPU; the margins leave room for others)
INT8_MAX_LOG_PROB_DIFF = 0.25
INT8_MIN_ARGMAX_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A TINY model (16x16 lips) as a checkpoint and as ONNX, and two real face clips with their manifest."""
    root = tmp_path_factory.mktemp("inference")
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        model.ctc_head.bias[BLANK_ID] -= BLANK_PENALTY
    checkpoint = root / "best_model.pth"
    save_checkpoint(checkpoint, {"config": TINY.to_dict(), "model": model.state_dict()})
    onnx_path = export_onnx(model, TINY, root / "model.onnx")
    clips = [write_clip(root / "clips", f"u{i}", seconds) for i, seconds in enumerate(CLIP_SECONDS)]
    manifest = write_manifest(root / "manifest.txt", [(a, v, "bin blue") for a, v in clips])
    return checkpoint, onnx_path, clips, manifest


@pytest.mark.slow
def test_a_clip_gives_the_same_transcript_through_pth_onnx_and_the_registered_model(model_files, tmp_path):
    checkpoint, onnx_path, clips, _ = model_files
    with global_uris(f"sqlite:///{tmp_path}/mlflow.db"):
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("ship", (tmp_path / "artifacts").as_uri()))
        register_onnx(onnx_path)
        engines = [
            AVASRInference(checkpoint),
            AVASRInference(checkpoint, device="onnx"),
            AVASRInference(onnx_path),
            AVASRInference("models:/avasr@champion"),
        ]
        for audio, video in clips:
            texts = [engine.transcribe(audio, video)["transcript"] for engine in engines]
            print(video.name, texts)
            assert texts[0] and len(set(texts)) == 1, texts  # not empty, and every backend agrees


def test_transcribe_gives_text_scores_and_the_stage_timings(model_files):
    checkpoint, _, clips, _ = model_files
    engine = AVASRInference(checkpoint)
    audio, video = clips[0]
    result = engine.transcribe(audio, video, transcript="Bin  blue.")  # normalised like a manifest's transcript
    assert set(result) == {"transcript", "wer", "cer", "latency_ms", "timings", "input"} and result["transcript"]
    assert result["input"] == "audio+video"
    assert result["wer"] == word_error_rate(["bin blue"], [result["transcript"]])
    assert result["cer"] == character_error_rate(["bin blue"], [result["transcript"]])
    assert tuple(result["timings"]) == STAGES and all(t > 0 for t in result["timings"].values())
    assert engine.transcribe(audio, video)["wer"] is None  # no reference, no score
    audio_in, video_in, _, _ = engine.features(audio, video)
    frames = round(CLIP_SECONDS[0] * TINY.fps)
    assert audio_in.shape == (1, 1, TINY.n_mels, AUDIO_TIME_DOWNSAMPLING * frames)
    assert video_in.shape == (1, frames, 1, TINY.lip_size, TINY.lip_size)


def test_a_manifest_runs_a_clip_without_a_face_on_audio_and_goes_on_past_a_broken_one(model_files, tmp_path):
    checkpoint, _, clips, _ = model_files
    faceless = write_clip(tmp_path, "noface", 1.2, face=False)
    (tmp_path / "broken.wav").write_bytes(b"RIFF, but not a WAV")
    manifest = write_manifest(
        tmp_path / "m.txt",
        [(*clips[0], "bin blue"), (*faceless, "lay red"), (tmp_path / "broken.wav", clips[0][1], "set")],
    )
    with pytest.warns(UserWarning, match="noface.mp4: no face found .*: transcribing the audio alone"):
        results = list(AVASRInference(checkpoint).transcribe_manifest(manifest))
    assert [r["id"] for r in results] == ["clips/u0", f"{tmp_path.name}/noface", f"{tmp_path.name}/broken"]
    assert results[0]["reference"] == "bin blue" and results[0]["input"] == "audio+video"
    assert results[1]["input"] == "audio" and results[1]["timings"]["lips_ms"] > 0  # it searched, then fell back
    assert results[2]["error"].startswith(f"{tmp_path}/broken.wav: cannot read audio")
    scores = corpus_scores(results)
    assert (scores["utterances"], scores["failed"]) == (2, 1) and scores["inputs"] == {"audio+video": 1, "audio": 1}


def test_bad_sources_and_devices_are_clear_errors(model_files, tmp_path):
    checkpoint, onnx_path, clips, _ = model_files
    with pytest.raises(CheckpointError, match="missing.pth: no such checkpoint file"):
        AVASRInference(tmp_path / "missing.pth")
    with pytest.raises(InferenceError, match="missing.onnx: no such ONNX file"):
        AVASRInference(tmp_path / "missing.onnx")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="foreign.pth: not a checkpoint written by avasr training"):
        AVASRInference(tmp_path / "foreign.pth")
    (tmp_path / "model.bin").write_bytes(b"weights")
    with pytest.raises(InferenceError, match=r"model.bin: unknown model format; pass a \.pth/\.pt checkpoint"):
        AVASRInference(tmp_path / "model.bin")
    with pytest.raises(InferenceError, match="unknown device 'tpu'"):
        AVASRInference(checkpoint, device="tpu")
    with pytest.raises(InferenceError, match="model.onnx: ONNX models run on onnxruntime's CPU provider"):
        AVASRInference(onnx_path, device="cuda")
    engine = AVASRInference(checkpoint)
    with pytest.raises(AudioError, match="nothing.wav: cannot read audio"):
        engine.transcribe(tmp_path / "nothing.wav", clips[0][1])


def test_an_onnx_file_with_other_input_names_is_refused_with_the_names_it_needs(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["audio"], ["log_probs"])],
        "other",
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in ("audio", "video")],
        [onnx.helper.make_tensor_value_info("log_probs", onnx.TensorProto.FLOAT, None)],
    )
    onnx.save_model(onnx.helper.make_model(graph), tmp_path / "old.onnx")
    with pytest.raises(
        ExportError,
        match="old.onnx: the graph's inputs are audio, video; avasr models take "
        "audio_features, video_features, lengths",
    ):
        AVASRInference(tmp_path / "old.onnx")


def test_one_stream_alone_is_an_input_and_its_other_stream_is_zeros(model_files, tmp_path):
    checkpoint, _, clips, _ = model_files
    engine = AVASRInference(checkpoint)
    (audio, video), frames = clips[0], round(CLIP_SECONDS[0] * TINY.fps)
    both_audio, both_video, _, _ = engine.features(audio, video)
    audio_in, video_in, timings, streams = engine.features(audio, None)
    assert streams == "audio" and torch.equal(audio_in, both_audio) and timings["video_ms"] == timings["lips_ms"] == 0
    assert torch.equal(video_in, torch.zeros(1, frames, 1, TINY.lip_size, TINY.lip_size))
    audio_in, video_in, timings, streams = engine.features(None, video)
    assert streams == "video" and torch.equal(video_in, both_video) and timings["audio_ms"] == 0
    assert torch.equal(audio_in, torch.zeros(1, 1, TINY.n_mels, AUDIO_TIME_DOWNSAMPLING * frames))
    assert engine.transcribe(None, video, "bin blue")["input"] == "video"
    with pytest.raises(InferenceError, match="needs an audio file, a video file or both; got neither"):
        engine.transcribe(None, None)


def test_a_face_less_clip_without_audio_to_fall_back_on_names_the_file(model_files, tmp_path):
    checkpoint, _, _, _ = model_files
    audio, video = write_clip(tmp_path, "noface", 1.2, face=False)
    with pytest.raises(NoFaceError, match="noface.mp4: no face found"):
        AVASRInference(checkpoint).transcribe(None, video)
    video_model = tmp_path / "video.pth"
    save_checkpoint(
        video_model, {"config": TINY.replace(modalities="video").to_dict(), "model": build_model(TINY).state_dict()}
    )
    with pytest.raises(NoFaceError, match="noface.mp4: no face found"):
        AVASRInference(video_model).transcribe(audio, video)


def test_export_onnx_from_a_checkpoint_matches_its_transcripts(model_files, tmp_path):
    checkpoint, _, clips, _ = model_files
    path = AVASRInference(checkpoint).export_onnx(tmp_path / "exported.onnx")
    assert [i.name for i in onnx.load_model(str(path)).graph.input] == ["audio_features", "video_features", "lengths"]
    audio, video = clips[1]
    text = AVASRInference(checkpoint).transcribe(audio, video)["transcript"]
    assert text and AVASRInference(path).transcribe(audio, video)["transcript"] == text


def test_cli_writes_one_json_line_per_utterance_and_the_corpus_scores(model_files):
    checkpoint, _, clips, manifest = model_files
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(checkpoint), "--manifest", str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["reference"] for line in lines] == ["bin blue", "bin blue"]
    assert all(np.isfinite(line["latency_ms"]) for line in lines)
    scores = json.loads(result.stderr.strip().splitlines()[-1])
    assert (scores["utterances"], scores["failed"]) == (2, 0)
    usage = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(checkpoint)], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2 and "give either --audio and/or --video, or --manifest" in usage.stderr
    video_only = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(checkpoint), "--video", str(clips[0][1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert video_only.returncode == 0, video_only.stderr
    assert json.loads(video_only.stdout)["input"] == "video"


@pytest.mark.parametrize("method", QUANTIZATIONS)
def test_int8_models_transcribe_like_fp32_and_keep_the_metadata(model_files, tmp_path, method):
    checkpoint, onnx_path, clips, manifest = model_files
    feeds = calibration_feeds(manifest, TINY.replace(cache_dir="")) if method == "static" else ()
    int8 = quantize(onnx_path, tmp_path / f"{method}.onnx", method, feeds)
    assert read_config(int8) == TINY.inference
    fp32_engine, int8_engine = AVASRInference(onnx_path), AVASRInference(int8)
    for audio, video in clips:
        audio_in, video_in, _, _ = fp32_engine.features(audio, video)
        expected, actual = fp32_engine.log_probs(audio_in, video_in), int8_engine.log_probs(audio_in, video_in)
        agree = (expected.argmax(-1) == actual.argmax(-1)).float().mean().item()
        print(f"{method} {video.name}: max |diff| {(expected - actual).abs().max():.3f}, argmax agree {agree:.3f}")
        assert (expected - actual).abs().max() < INT8_MAX_LOG_PROB_DIFF and agree >= INT8_MIN_ARGMAX_AGREEMENT


def test_static_quantization_without_calibration_data_is_refused(model_files, tmp_path):
    _, onnx_path, _, _ = model_files
    with pytest.raises(ValueError, match="static quantization needs calibration feeds"):
        quantize(onnx_path, tmp_path / "int8.onnx", "static")


def test_files_become_exactly_the_features_training_sees(model_files):
    """Inference runs the training pipeline itself: a clip's model inputs equal the dataset's, bit for bit."""
    checkpoint, _, clips, manifest = model_files
    engine = AVASRInference(checkpoint)
    for entry in read_manifest(manifest):
        audio, video, _, _ = engine.features(entry.audio_path, entry.video_path)
        batch = collate([load_utterance(entry, TINY.replace(cache_dir=""))])  # computed, not cached
        assert torch.equal(audio, batch.audio) and torch.equal(video, batch.video)


@pytest.mark.slow
def test_registering_twice_makes_two_versions_and_moves_the_alias(model_files, tmp_path):
    _, onnx_path, _, _ = model_files
    with global_uris(f"sqlite:///{tmp_path}/mlflow.db"):  # where register_onnx registers
        # artifacts in tmp_path too: the default location is ./mlruns in the working directory
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("export", (tmp_path / "artifacts").as_uri()))
        with mlflow.start_run() as run:
            first = register_onnx(onnx_path, metrics={"cpu_latency_ms_p50": 1.5})
        second = register_onnx(onnx_path, run_id=run.info.run_id)
        assert (first.name, str(first.version), str(second.version)) == ("avasr", "1", "2")
        client = mlflow.MlflowClient()
        assert str(client.get_model_version_by_alias("avasr", "champion").version) == "2"
        assert client.get_run(run.info.run_id).data.metrics == {"cpu_latency_ms_p50": 1.5}
        with pytest.raises(RegistryError, match="models:/avasr@nobody: cannot load it from the tracking store"):
            AVASRInference("models:/avasr@nobody")


def test_a_single_modality_model_gets_the_other_stream_blanked_as_in_training(model_files, tmp_path):
    _, _, clips, manifest = model_files
    torch.manual_seed(0)
    config = TINY.replace(modalities="audio")
    checkpoint = tmp_path / "audio_only.pth"
    save_checkpoint(checkpoint, {"config": config.to_dict(), "model": build_model(config).state_dict()})
    audio, video, _, _ = AVASRInference(checkpoint).features(*clips[0])
    batch = collate([load_utterance(read_manifest(manifest)[0], config.replace(cache_dir=""))])
    assert not video.any() and torch.equal(audio, batch.audio)
    assert torch.equal(video, batch.keep_modalities("audio").video)
