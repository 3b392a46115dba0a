"""A randomly initialised SAMU model of a given backbone shape, with a small random text teacher, saved to disk:
what ``bench_api.py`` serves on a machine without the offline demo models (speed depends on shape, not on
weights). Nothing is downloaded.

    python bench/make_bench_model.py --size xlsr-300m --out /tmp/bench_model    # -> /tmp/bench_model/samu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speech import backbone_config, random_teacher  # noqa: E402

from miner.encoders.samu import SpeechEncoder  # noqa: E402
from miner.encoders.text import load_text_encoder  # noqa: E402


def make(size: str, out: Path) -> Path:
    """Write ``out/backbone``, ``out/teacher`` and ``out/samu``; return the SAMU folder."""
    from transformers import Wav2Vec2Model, WhisperModel

    torch.manual_seed(0)
    model_class = WhisperModel if "whisper" in size else Wav2Vec2Model
    model_class(backbone_config(size)).save_pretrained(out / "backbone")
    teacher = random_teacher(out)
    space = load_text_encoder(str(teacher), device="cpu").space_id  # the space text queries will be in
    samu = SpeechEncoder.from_backbone(str(out / "backbone"), dim=768, space_id=space, teacher=str(teacher))
    samu.save_pretrained(out / "samu")
    return out / "samu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", choices=["xlsr-300m", "whisper-base", "tiny", "tiny-whisper"], default="xlsr-300m"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(make(args.size, args.out))


if __name__ == "__main__":
    main()
