"""Shared fixtures: tiny randomly initialised models saved to tmp dirs and loaded through the real code paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The tiny text encoder's vocabulary (besides the special tokens): a few English, French and German words.
TINY_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sleeps",
    "runs",
    "on",
    "sofa",
    "house",
    "le",
    "chat",
    "chien",
    "dort",
    "maison",
    "sur",
    "der",
    "die",
    "hund",
    "katze",
    "schläft",
]


def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny XLS-R-shaped wav2vec2 (layer-norm CNN, like XLS-R) saved with save_pretrained."""
    _torch_threads()
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        feat_extract_norm="layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True,
        mask_time_prob=0.0,
        vocab_size=8,
    )
    out = tmp_path_factory.mktemp("w2v2")
    Wav2Vec2Model(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Whisper (full encoder-decoder checkpoint, as on the hub) saved with save_pretrained."""
    _torch_threads()
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    out = tmp_path_factory.mktemp("whisper")
    WhisperModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sentence-transformers model assembled like LaBSE: BERT -> CLS pooling -> Dense(tanh) -> Normalize."""
    _torch_threads()
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("st")
    bert_dir = root / "bert"
    bert_dir.mkdir()
    words = TINY_WORDS
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words,
        *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
        *list("abcdefghijklmnopqrstuvwxyzäöüéèà.,!?"),
    ]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(bert_dir)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # large random weights: CLS output must depend on the words in tests
    )
    BertModel(cfg).save_pretrained(bert_dir)
    word = models.Transformer(str(bert_dir), max_seq_length=32)
    pool = models.Pooling(32, pooling_mode="cls")
    import torch

    dense = models.Dense(32, 16, activation_function=torch.nn.Tanh())
    model = SentenceTransformer(modules=[word, pool, dense, models.Normalize()], device="cpu")
    out = root / "st-model"
    model.save(str(out))
    return out


def build_spread_teacher(tiny_st_dir: Path, root: Path) -> Path:
    """A teacher whose sentences are far apart, built from the tiny fixture's BERT folder.

    The ``tiny_st_dir`` fixture (CLS + tanh over a random BERT) gives every sentence nearly the same vector
    (cosines > 0.9999), and with transformers 5 its tokenizer maps every word to [UNK]. This one loads the
    vocabulary properly, makes word embeddings dominate positions, and uses mean pooling + a linear Dense.
    """
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models

    torch.manual_seed(0)
    bert = root / "bert"
    shutil.copytree(tiny_st_dir.parent / "bert", bert)
    vocab = str(bert / "vocab.txt")
    tok = BertTokenizerFast(vocab=vocab)  # transformers 5 ignores vocab_file=
    if len(tok) <= 5:  # transformers 4
        tok = BertTokenizerFast(vocab_file=vocab)
    tok.save_pretrained(bert)
    word = models.Transformer(str(bert), max_seq_length=32)
    assert "[UNK]" not in word.tokenizer.tokenize("the cat sleeps")
    word.auto_model.embeddings.word_embeddings.weight.data.normal_(0.0, 1.0)  # BERT init (0.02) is too small
    dense = models.Dense(32, 16, activation_function=torch.nn.Identity())
    model = SentenceTransformer(
        modules=[word, models.Pooling(32, pooling_mode="mean"), dense, models.Normalize()], device="cpu"
    )
    out = root / "st-spread"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def spread_st_dir(tiny_st_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spread_teacher(tiny_st_dir, tmp_path_factory.mktemp("spread"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny multilingual training corpus of :mod:`tests._train_fixtures` (16 clips + ``train.tsv``)."""
    from tests._train_fixtures import write_tiny_corpus

    _torch_threads()
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def make_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A speech-like test signal: a few harmonics with a slow envelope plus noise, float32 at 16 kHz."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = rng.uniform(100, 220)
    sig = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 5))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    return (0.2 * sig * env + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
