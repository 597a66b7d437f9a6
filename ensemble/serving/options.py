"""Serving's options and their defaults, written once: `ServeOptions` (the application's arguments,
as `serve run ensemble.serving.application:app run_dir=...` passes them), and where the HTTP
server listens. `ensemble.serve()`'s signature, the CLI's flags and the replicas read them here.
Light on purpose (pydantic only), so the CLI builds its parser without importing Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ensemble.storage import is_uri
from workers.errors import InputError

MiB = 1024 * 1024
HOST = "127.0.0.1"  # this machine only; 0.0.0.0 listens on every interface
PORT = 8000
REPLICAS = 1
MAX_BATCH_SIZE = 16  # 1 turns batching off
MAX_BODY_BYTES = 32 * MiB
CPUS_PER_REPLICA = 1.0


class ServeOptions(BaseModel):
    """The application's arguments: `serve run ensemble.serving.application:app run_dir=...`, a config's `args`."""
    model_config = ConfigDict(extra="forbid")
    run_dir: str = Field(description="a finished run directory, local or a URI")
    replicas: int = Field(REPLICAS, ge=1, description="replicas, each with the whole model")
    max_batch_size: int = Field(MAX_BATCH_SIZE, ge=1, description="most requests one forward pass answers")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1, description="larger request bodies get HTTP 413")
    cpus_per_replica: float = Field(CPUS_PER_REPLICA, gt=0)
    gpus_per_replica: Optional[float] = Field(None, ge=0, description="null: the run's resources.gpus_per_member")
    autoencoder: Optional[str] = Field(None, description="module:name of a custom run's autoencoder factory")
    trust_code: bool = Field(False, description="import the autoencoder module the run recorded (run dirs may "
                                                "come from elsewhere: only when you trust the run)")

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return value if is_uri(value) else str(Path(value).expanduser().resolve())


def serve_options(**values) -> ServeOptions:
    try:
        return ServeOptions(**values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InputError(f"invalid serving option(s): {problems}.") from None
