"""The MLflow model registry: an exported .onnx file logged as an MLflow model, registered as a new version of
`avasr` with the `champion` alias pointed at it, and loaded back from a model URI (models:/avasr@champion, runs:/...).

Uses the current (global) tracking and registry URIs: callers set them (`tracking.global_uris`). MLflow is imported
inside the functions: exporting and transcribing from local files need no MLflow.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import onnx

from avasr.errors import AvasrError
from avasr.ship.export import PROVIDERS

MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
REGISTERED_MODEL_NAME = "avasr"
CHAMPION_ALIAS = "champion"
ARTIFACT_NAME = "model"  # the logged model's name inside its run


def is_model_uri(source: str | Path) -> bool:
    return str(source).startswith(MODEL_URI_SCHEMES)


def register_onnx(
    onnx_path: str | Path,
    *,
    run_id: str | None = None,
    name: str = REGISTERED_MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
):
    """Log the .onnx file as an MLflow model, register it as a new version of `name`, point `alias` at it.

    The model goes into run `run_id` (e.g. the sweep's best trial), else into the active run, else into a new
    run of the current experiment. `metrics` (e.g. cpu_latency_ms_p50) are logged to that run. Returns the mlflow
    ModelVersion.
    """
    import mlflow
    from mlflow import MlflowClient

    proto = onnx.load_model(str(onnx_path))
    active = mlflow.active_run()
    reuse_active = active is not None and run_id in (None, active.info.run_id)
    with mlflow.start_run(run_id=run_id) if not reuse_active else contextlib.nullcontext():
        if metrics:
            mlflow.log_metrics(metrics)
        info = mlflow.onnx.log_model(
            proto,
            name=ARTIFACT_NAME,
            registered_model_name=name,
            signature=onnx_signature(proto),
            onnx_execution_providers=list(PROVIDERS),
            tags=tags,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, version)
    return client.get_model_version(name, version)


def onnx_signature(proto: onnx.ModelProto):
    """An MLflow tensor signature from the graph: symbolic dimensions become -1."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def specs(values) -> Schema:
        return Schema(
            [
                TensorSpec(
                    onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type),
                    tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim),
                    v.name,
                )
                for v in values
            ]
        )

    return ModelSignature(inputs=specs(proto.graph.input), outputs=specs(proto.graph.output))


class RegistryError(AvasrError, LookupError):
    """A model URI that the tracking store cannot resolve; the message names it and the store."""


def load_onnx_model(uri: str) -> onnx.ModelProto:
    """The ONNX graph logged under an MLflow model URI, e.g. models:/avasr@champion."""
    import mlflow
    import mlflow.onnx
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:  # MLflow downloads the artifacts; nothing stays behind
        try:
            return mlflow.onnx.load_model(uri, dst_path=tmp)
        except MlflowException as e:
            raise RegistryError(
                f"{uri}: cannot load it from the tracking store {mlflow.get_tracking_uri()} "
                f"(set MLFLOW_TRACKING_URI to the sweep's store): {e.message}"
            ) from None
