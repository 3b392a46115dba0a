"""Speech-side throughput on a GPU (or CPU): SAMU-XLSR embedding and training, each beside the raw library.

    python bench/bench_speech.py [--size xlsr-300m|whisper-base|tiny|tiny-whisper] [--clips 256] [--out F]

The backbone is randomly initialised in the shape of XLS-R 300M (wav2vec2, 24 layers, 1024 hidden, layer-norm
CNN; the paper's) or of Whisper base's encoder (6 layers, 512 hidden; the offline default's): speed depends on
the shape, not the weights, and no hub is needed. Both parts go through the real code paths.

- encode: ``SpeechEncoder.from_pretrained`` (backbone folder -> SAMU folder -> load) and ``encode`` over
  ``--clips`` clips of random length, vs the plain transformers model called with its own feature extractor
  (Whisper's pads every clip to 30 s; ours runs Whisper at the clip's length) over the same length-sorted
  batches, same autocast (bf16 on CUDA).
- train: ``miner.train.loop.train`` on WAV files (a few head-only updates, then the whole transformer, CNN
  frozen, as in the paper; amp on CUDA; cosine + InfoNCE on a small random teacher) vs a plain forward +
  backward + AdamW step of the same backbone on batches of the same padded size (``--batch-seconds``).

Prints a markdown table; ``--out`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

SR = 16000
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "house",
    "runs",
    "sleeps",
    "on",
    "red",
    "blue",
    "big",
    "small",
    "green",
    "old",
]


def backbone_config(size: str) -> Any:
    """The transformers config of a backbone shape: ``xlsr-300m``, ``whisper-base`` (its encoder; a one-layer
    decoder, unused), or ``tiny`` / ``tiny-whisper`` for a CPU smoke run."""
    from transformers import Wav2Vec2Config, WhisperConfig

    if "whisper" in size:
        base = size == "whisper-base"
        return WhisperConfig(
            d_model=512 if base else 32, encoder_layers=6 if base else 2, encoder_attention_heads=8 if base else 2,
            encoder_ffn_dim=2048 if base else 64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
            num_mel_bins=80, max_source_positions=1500, max_target_positions=32, vocab_size=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, decoder_start_token_id=3, suppress_tokens=None,
            begin_suppress_tokens=None,
        )  # fmt: skip

    common = dict(feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0, vocab_size=8)
    if size == "xlsr-300m":
        return Wav2Vec2Config(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            conv_bias=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, **common,
        )  # fmt: skip
    return Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **common,
    )  # fmt: skip


class PlainBackbone:
    """The raw transformers model called with its own feature extractor, as its documentation shows."""

    def __init__(self, folder: Path, device: torch.device, train: bool = False) -> None:
        from transformers import AutoConfig

        self.whisper = AutoConfig.from_pretrained(folder).model_type == "whisper"
        self.device = device
        if self.whisper:
            from transformers import WhisperFeatureExtractor, WhisperModel

            self.model: Any = WhisperModel.from_pretrained(folder).get_encoder()
            self.extractor: Any = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
            frozen: tuple[str, ...] = ("conv1.", "conv2.", "embed_positions.")
        else:
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

            self.model = Wav2Vec2Model.from_pretrained(folder)
            self.extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
            frozen = ("feature_extractor.",)
        self.model.to(device).train(train)
        for name, p in self.model.named_parameters():  # the CNN stays frozen, as in the trainer
            p.requires_grad_(not name.startswith(frozen))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Frames float (B, T, H) of a batch of 16 kHz waveforms."""
        if self.whisper:  # Whisper's extractor pads (or cuts) every clip to 30 s
            feats = self.extractor(waves, sampling_rate=SR, return_tensors="pt")
            return self.model(feats["input_features"].to(self.device)).last_hidden_state
        feats = self.extractor(waves, sampling_rate=SR, padding=True, return_tensors="pt")
        mask = feats["attention_mask"].to(self.device)
        return self.model(feats["input_values"].to(self.device), attention_mask=mask).last_hidden_state


def random_clips(n: int, lo: float, hi: float, seed: int = 0) -> list[np.ndarray]:
    """n float32 waveforms of uniform random length in [lo, hi] seconds (noise: speed ignores content)."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(rng.uniform(lo, hi) * SR))).astype(np.float32) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def bench_encode(
    backbone_dir: Path,
    root: Path,
    device: torch.device,
    clips: list[np.ndarray],
    bs: int,
    repeats: int,
    batch_seconds: float | None = None,
    cast_weights: bool = False,
) -> dict:
    """Seconds of ``SpeechEncoder.encode`` and of the plain model's forward over the same batches.

    ``batch_seconds``: batches by padded audio seconds as well as by count (``encode(batch_seconds=...)``);
    ``cast_weights``: the model's weights cast to bf16 once (``for_inference``) instead of autocast.
    """
    from miner.encoders.batching import budget_batches
    from miner.encoders.samu import SpeechEncoder

    samu_dir = root / "samu"
    if not samu_dir.exists():
        SpeechEncoder.from_backbone(
            str(backbone_dir), dim=768, space_id="bench", teacher="bench"
        ).save_pretrained(samu_dir)
    ours = SpeechEncoder.from_pretrained(samu_dir, device=str(device))
    if cast_weights:
        ours.for_inference()
    plain = PlainBackbone(backbone_dir, device)
    budget = None if batch_seconds is None else int(batch_seconds * SR)
    batches = list(budget_batches([len(c) for c in clips], bs, budget))

    def run_ours() -> None:
        ours.encode(clips, batch_size=bs, batch_seconds=batch_seconds)  # returns numpy: already synchronised

    def run_plain() -> None:
        with torch.inference_mode(), autocast(device):
            for idx in batches:
                plain([clips[i] for i in idx]).float().mean(1).cpu()
        sync(device)

    # One untimed pass each (kernel choice, allocator growth for every batch shape), then interleaved timed
    # rounds, best of: the first timing of a fresh model pays for all of that once (2.7x on an H200).
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    work_gib: dict[str, float] = {}
    for name, fn in (("ours", run_ours), ("plain", run_plain)):
        reset_peak(device)
        resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        fn()
        work_gib[name] = peak_gib(device) - resident / 2**30  # activations above the two resident models
    for _ in range(repeats):
        for name, fn in (("ours", run_ours), ("plain", run_plain)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    t_ours, t_plain = min(times["ours"]), min(times["plain"])
    mem_ours, mem_plain = work_gib["ours"], work_gib["plain"]
    audio_s = sum(len(c) for c in clips) / SR
    reset_peak(device)
    return dict(
        batch_size=bs, batch_seconds=batch_seconds, cast_weights=cast_weights, batches=len(batches),
        clips=len(clips), audio_s=audio_s, ours_s=t_ours, plain_s=t_plain, ours_gib=mem_ours, plain_gib=mem_plain,
    )  # fmt: skip


def measured_floor(backbone_dir: Path, device: torch.device) -> dict[str, float]:
    """The bf16 matrix-product rate of this device (8192^3, mean of 10 after 3 warm-ups) and the backbone's
    FLOPs per audio second (torch's flop counter on one 10 s clip): their ratio is the encode floor."""
    from torch.utils.flop_counter import FlopCounterMode

    plain = PlainBackbone(backbone_dir, torch.device("cpu") if device.type != "cuda" else device)
    clip = random_clips(1, 10.0, 10.0, seed=1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # inference_mode breaks weight_norm here
        plain(clip)
    flops_per_audio_s = counter.get_total_flops() / 10.0
    del plain
    if device.type != "cuda":
        return {"flops_per_audio_s": flops_per_audio_s}
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    tflops = 2 * n**3 * 10 / (time.perf_counter() - t) / 1e12
    return {
        "flops_per_audio_s": flops_per_audio_s,
        "bf16_tflops": tflops,
        "floor_x_real_time": tflops * 1e12 / flops_per_audio_s,
    }


def random_teacher(root: Path) -> Path:
    """A small random sentence-transformers model (BERT -> mean pooling -> Dense -> Normalize) saved to disk."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer import modules as st_modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as st_modules

    bert = root / "teacher-bert"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).save_pretrained(bert)
    word = st_modules.Transformer(str(bert), max_seq_length=32)
    word.auto_model.embeddings.word_embeddings.weight.data.normal_(0.0, 1.0)  # sentences far apart
    dense = st_modules.Dense(64, 768, activation_function=torch.nn.Identity())
    model = SentenceTransformer(modules=[word, st_modules.Pooling(64, "mean"), dense, st_modules.Normalize()])
    model.save(str(root / "teacher"))
    return root / "teacher"


def write_corpus(root: Path, clips: list[np.ndarray]) -> Path:
    """WAV files plus a TSV manifest (id, audio, text, lang, duration) of random sentences in three languages."""
    from miner.audio import write_audio

    rng = np.random.default_rng(1)
    rows = ["id\taudio\ttext\tlang\tduration"]
    for i, clip in enumerate(clips):
        rel = f"audio/{i}.wav"
        write_audio(root / rel, clip)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        rows.append(f"u{i}\t{rel}\t{text}\t{('fr', 'de', 'es')[i % 3]}\t{len(clip) / SR:.3f}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "train.tsv"


def padded_batches(clips: list[np.ndarray], batch_seconds: float, seed: int) -> Iterator[list[int]]:
    """Endless random batches of similar-length clips, each at most ``batch_seconds`` of padded audio."""
    order = np.argsort([len(c) for c in clips])
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * len(clips[i]) / SR > batch_seconds:
            groups.append(cur)
            cur = []
        cur.append(int(i))
    groups.append(cur)
    rng = np.random.default_rng(seed)
    while True:
        yield groups[int(rng.integers(len(groups)))]


def bench_train(
    backbone_dir: Path, root: Path, device: torch.device, clips: list[np.ndarray], args: argparse.Namespace
) -> dict:
    """Utterances per second of the real trainer's full phase and of a plain fine-tuning step of the backbone."""
    from miner.train.config import load_config
    from miner.train.loop import train

    manifest = write_corpus(root / "corpus", clips)
    out_dir = root / "run"
    head_only = 3
    cfg = load_config(None, [
        f"train_manifest={manifest}", f"backbone={backbone_dir}", f"teacher={random_teacher(root)}",
        f"out_dir={out_dir}", f"max_updates={head_only + args.train_updates}", f"head_only_updates={head_only}",
        f"batch_seconds={args.batch_seconds}", "log_every=5", "save_every=0", "eval_every=0", "num_workers=4",
        "peak_lr=1e-4", "contrastive_weight=1.0", "center_targets=true", "amp=true",
    ])  # fmt: skip
    reset_peak(device)
    t = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t
    mem_ours = peak_gib(device)
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    full = [r for r in rows if r.get("phase") == "full" and "utt_per_s" in r]
    ours_utt_s = float(np.median([r["utt_per_s"] for r in full[1:] or full]))  # first window holds warm-up

    plain = PlainBackbone(backbone_dir, device, train=True)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    batches = padded_batches(clips, args.batch_seconds, seed=0)

    def step() -> int:
        idx = next(batches)
        with autocast(device):
            loss = plain([clips[i] for i in idx]).float().mean(1).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return len(idx)

    for _ in range(3):
        step()
    sync(device)
    reset_peak(device)
    t = time.perf_counter()
    n = sum(step() for _ in range(args.train_updates))
    sync(device)
    plain_utt_s = n / (time.perf_counter() - t)
    return dict(
        updates=args.train_updates, batch_seconds=args.batch_seconds, ours_utt_s=ours_utt_s,
        plain_utt_s=plain_utt_s, ours_wall_s=wall, ours_gib=mem_ours, plain_gib=peak_gib(device),
        mean_clip_s=float(np.mean([len(c) for c in clips]) / SR),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", choices=["xlsr-300m", "whisper-base", "tiny", "tiny-whisper"], default="xlsr-300m"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=12.0)
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=3, help="timed encode rounds per batch size, best of")
    ap.add_argument("--train-updates", type=int, default=20, help="timed updates of the full phase (0 skips)")
    ap.add_argument("--batch-seconds", type=float, default=320.0, help="training batches (padded seconds)")
    ap.add_argument(
        "--encode-variants",
        default="autocast,cast,cast+seconds",
        help="encode paths to time at each batch size: autocast (fp32 weights, bf16 autocast, clip-count "
        "batches), cast (bf16 weights), cast+seconds (bf16 weights, batches by --encode-seconds as well); "
        "NAME@N runs NAME at batch size N only",
    )
    ap.add_argument("--encode-seconds", type=float, default=640.0, help="padded seconds per encode batch")
    ap.add_argument("--floor", action="store_true", help="measure the bf16 floor and the FLOPs per audio second")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from transformers import Wav2Vec2Model, WhisperModel

    device = torch.device(args.device)
    clips = random_clips(args.clips, args.min_seconds, args.max_seconds)
    result: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, size=args.size, encode=[], train=None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        model_class = WhisperModel if "whisper" in args.size else Wav2Vec2Model
        model_class(backbone_config(args.size)).save_pretrained(root / "backbone")
        if args.floor:
            result["floor"] = measured_floor(root / "backbone", device)
            print("floor:", result["floor"], flush=True)
        runs = []  # (variant, batch size): a variant written name@N runs at batch size N only
        for spec in args.encode_variants.split(","):
            name, _, size = spec.partition("@")
            runs += [(name, int(size))] if size else [(name, int(b)) for b in args.batch_sizes.split(",")]
        for variant, bs in runs:
            seconds = args.encode_seconds if "seconds" in variant else None
            r = bench_encode(
                root / "backbone", root, device, clips, bs, args.repeats, seconds, variant.startswith("cast")
            )
            r["variant"] = variant
            print(f"encode {variant} batch {bs}: ours {r['audio_s'] / r['ours_s']:.0f} x real time, "
                  f"plain {r['audio_s'] / r['plain_s']:.0f}", flush=True)  # fmt: skip
            result["encode"].append(r)
        if args.train_updates > 0:
            result["train"] = bench_train(root / "backbone", root, device, clips, args)
    print(f"\n{result['device']}, torch {result['torch']}, backbone {args.size} (random init)\n")
    floor = result.get("floor", {}).get("floor_x_real_time")
    print("| encode path | batch | x real time ours | plain | ours/plain time | % of floor | work GiB ours / plain |")
    print("|---|---|---|---|---|---|---|")
    for r in result["encode"]:
        rate = r["audio_s"] / r["ours_s"]
        share = f"{100 * rate / floor:.1f}" if floor else "-"
        print(f"| {r['variant']} | {r['batch_size']} | {rate:.0f} | {r['audio_s'] / r['plain_s']:.0f} "
              f"| {r['ours_s'] / r['plain_s']:.2f} | {share} | {r['ours_gib']:.2f} / {r['plain_gib']:.2f} |")  # fmt: skip
    if result["train"]:
        r = result["train"]
        print(f"\n| train ({r['batch_seconds']:.0f} s batches, clips {r['mean_clip_s']:.1f} s) | utt/s | audio h per h |"
              " peak GiB |\n|---|---|---|---|")  # fmt: skip
        for name, key, mem in (("miner train (full phase)", "ours_utt_s", "ours_gib"),
                               ("plain fwd+bwd+AdamW", "plain_utt_s", "plain_gib")):  # fmt: skip
            print(f"| {name} | {r[key]:.1f} | {r[key] * r['mean_clip_s']:.0f} | {r[mem]:.2f} |")
        print(
            f"\nours/plain utt/s: {r['ours_utt_s'] / r['plain_utt_s']:.2f}; whole trainer run {r['ours_wall_s']:.0f} s"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
