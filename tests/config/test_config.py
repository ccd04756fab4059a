"""Config loading: _BASE_ inheritance, KEY=VALUE overrides, unknown keys, types, dump round trip, defaults."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from od2.config import ConfigError, check_choice, config_names, get_cfg, load_config, parse_overrides


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- _BASE_ inheritance


def test_base_inheritance_child_overrides(tmp_path):
    write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 77\nMODEL:\n  FPN:\n    NORM: GN\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    cfg = load_config(child)
    assert cfg.SOLVER.BASE_LR == 0.25  # child wins
    assert cfg.SOLVER.MAX_ITER == 77  # from the base
    assert cfg.MODEL.FPN.NORM == "GN"  # from the base
    assert cfg.SOLVER.MOMENTUM == get_cfg().SOLVER.MOMENTUM  # untouched default
    assert "_BASE_" not in cfg


def test_base_chain_of_three_and_relative_path(tmp_path):
    write(tmp_path / "root.yaml", "SEED: 1\nOUTPUT_DIR: root_out\nSOLVER:\n  WARMUP_ITERS: 11\n")
    write(tmp_path / "mid" / "mid.yaml", "_BASE_: ../root.yaml\nSEED: 2\n")
    leaf = write(tmp_path / "mid" / "deeper" / "leaf.yaml", "_BASE_: ../mid.yaml\nOUTPUT_DIR: leaf_out\n")
    cfg = load_config(leaf)
    assert cfg.SEED == 2
    assert cfg.OUTPUT_DIR == "leaf_out"
    assert cfg.SOLVER.WARMUP_ITERS == 11


def test_base_is_relative_to_the_file_not_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "cfgs" / "base.yaml", "SEED: 5\n")
    child = write(tmp_path / "cfgs" / "child.yaml", "_BASE_: base.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(child).SEED == 5


@pytest.mark.parametrize("self_cycle", [False, True])
def test_base_cycle_is_a_config_error(tmp_path, self_cycle):
    if self_cycle:
        a = write(tmp_path / "a.yaml", "_BASE_: a.yaml\nSEED: 1\n")
    else:
        a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\nSEED: 1\n")
        write(tmp_path / "b.yaml", "_BASE_: a.yaml\nSEED: 2\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(a)


def test_missing_base_file(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: nope.yaml\n")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(child)


# ---------------------------------------------------------------- packaged configs by name

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["digits/retinanet_lite0.yaml", "digits/retinanet_lite0",
                                  "configs/digits/retinanet_lite0.yaml"])
def test_a_config_name_loads_the_packaged_file_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name is looked up among the packaged configs
    cfg = load_config(name)
    # Values written in configs/digits/retinanet_lite0.yaml itself.
    assert cfg.DATASETS.TRAIN == ["digits_train"] and cfg.MODEL.BACKBONE.NAME == "efficientnet_lite0"


def test_a_packaged_config_inherits_its_packaged_base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("coco/RetinaNet-GN")
    base = yaml.safe_load((REPO_CONFIGS / "Base-RetinaNet.yaml").read_text(encoding="utf-8"))
    assert cfg.MODEL.FPN.NORM == "GN"  # from coco/RetinaNet-GN.yaml
    # Set only in its _BASE_ (../Base-RetinaNet.yaml), to a value other than the default.
    assert cfg.TEST.EVAL_PERIOD == base["TEST"]["EVAL_PERIOD"] != get_cfg().TEST.EVAL_PERIOD


def test_configs_are_read_as_utf8_whatever_the_locale():
    """The packaged configs hold non-ASCII text (Base-RetinaNet.yaml's comments): a process whose locale is ASCII
    must load them too."""
    assert any(ord(c) > 127 for c in (REPO_CONFIGS / "Base-RetinaNet.yaml").read_text(encoding="utf-8"))
    code = "from od2.config import load_config; print(load_config('coco/RetinaNet-GN').MODEL.FPN.NORM)"
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "GN", out.stderr[-2000:]


def test_a_local_file_wins_over_the_packaged_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "digits" / "retinanet_lite0.yaml", "SEED: 1234\n")
    assert load_config("digits/retinanet_lite0.yaml").SEED == 1234


def test_a_user_config_may_inherit_from_a_packaged_config(tmp_path):
    mine = write(tmp_path / "mine.yaml", "_BASE_: coco/RetinaNet-GN.yaml\nSOLVER:\n  MAX_ITER: 10\n")
    cfg = load_config(mine)
    assert cfg.SOLVER.MAX_ITER == 10 and cfg.MODEL.FPN.NORM == "GN"
    base = yaml.safe_load((REPO_CONFIGS / "Base-RetinaNet.yaml").read_text(encoding="utf-8"))
    assert cfg.TEST.EVAL_PERIOD == base["TEST"]["EVAL_PERIOD"]


def test_a_wrong_config_name_lists_close_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="RetinaNet-GM") as error:
        load_config("coco/RetinaNet-GM")
    assert "coco/RetinaNet-GN" in str(error.value)


def test_config_names_lists_every_packaged_config():
    names = config_names()
    on_disk = sorted(p.relative_to(REPO_CONFIGS).with_suffix("").as_posix() for p in REPO_CONFIGS.rglob("*.yaml")
                     if p.relative_to(REPO_CONFIGS).parts[0] != "sweeps")  # od2 sweep's specs, not configs
    assert names == on_disk and "coco/RetinaNet-GN" in names


# ---------------------------------------------------------------- overrides


def test_overrides_parse_yaml_values():
    nested = parse_overrides(["SOLVER.BASE_LR=0.01", "SOLVER.STEPS=[100, 200]", "MODEL.FPN.NORM=GN",
                              "INPUT.RANDOM_FLIP=0", "DATASETS.ROOT="])
    assert nested == {"SOLVER": {"BASE_LR": 0.01, "STEPS": [100, 200]}, "MODEL": {"FPN": {"NORM": "GN"}},
                      "INPUT": {"RANDOM_FLIP": 0}, "DATASETS": {"ROOT": ""}}


def test_overrides_applied_after_files(tmp_path):
    path = write(tmp_path / "c.yaml", "SOLVER:\n  BASE_LR: 0.5\n  STEPS: [1, 2]\n")
    cfg = load_config(path, ["SOLVER.BASE_LR=0.125", "SOLVER.STEPS=[10,20,30]", "DATASETS.TRAIN=[a, b]",
                             "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[[1.0, 2]]", "MODEL.FPN.NORM=BN"])
    assert cfg.SOLVER.BASE_LR == 0.125
    assert cfg.SOLVER.STEPS == [10, 20, 30]
    assert cfg.DATASETS.TRAIN == ["a", "b"]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[1.0, 2.0]]
    assert all(isinstance(r, float) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0])
    assert cfg.MODEL.FPN.NORM == "BN"


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["SOLVER.BASE_LR"])


def test_unknown_override_key_suggests():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["SOLVER.BASE_RL=0.1"])
    msg = str(info.value)
    assert "SOLVER.BASE_RL" in msg and "SOLVER.BASE_LR" in msg and "command line" in msg


def test_scientific_notation_float(tmp_path):
    # PyYAML reads "1e-4" (no dot) as a string; a float key must still accept it.
    path = write(tmp_path / "c.yaml", "SOLVER:\n  WEIGHT_DECAY: 1e-4\n")
    assert load_config(path, ["SOLVER.BASE_LR=2e-3"]).SOLVER.BASE_LR == pytest.approx(2e-3)
    assert load_config(path).SOLVER.WEIGHT_DECAY == pytest.approx(1e-4)


# ---------------------------------------------------------------- unknown keys in files


@pytest.mark.parametrize("text,bad,good", [
    ("SOLVER:\n  BASE_RL: 0.1\n", "SOLVER.BASE_RL", "SOLVER.BASE_LR"),
    ("MODEL:\n  FPN:\n    NROM: GN\n", "MODEL.FPN.NROM", "MODEL.FPN.NORM"),
    ("MODEL:\n  RETINANET:\n    PRIOR_PROBB: 0.1\n", "MODEL.RETINANET.PRIOR_PROBB", "MODEL.RETINANET.PRIOR_PROB"),
    ("SOLVR:\n  BASE_LR: 0.1\n", "SOLVR", "SOLVER"),
])
def test_unknown_key_in_file(tmp_path, text, bad, good):
    path = write(tmp_path / "typo.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert repr(bad) in msg or bad in msg
    assert str(path.resolve()) in msg or path.name in msg
    assert good in msg
    assert "Did you mean" in msg


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "base.yaml", "SOLVER:\n  BASE_RL: 0.1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    assert "base.yaml" in str(info.value) and "SOLVER.BASE_LR" in str(info.value)


def test_retired_key_in_an_old_run_folder_config_loads_with_a_warning_naming_its_replacement(tmp_path, caplog):
    old = get_cfg().to_dict()  # a run folder's config.yaml from before Winograd became a test-time conversion
    old["MODEL"]["RETINANET"]["WINOGRAD"] = True
    path = write(tmp_path / "config.yaml", yaml.safe_dump(old))
    with caplog.at_level("WARNING", logger="od2.config"):
        cfg = load_config(path, ["MODEL.RETINANET.WINOGRAD=false"])
    assert cfg == get_cfg()  # ignored: the old default (on) must not turn the opt-in conversion on
    assert "WINOGRAD" not in cfg.MODEL.RETINANET and cfg.TEST.WINOGRAD is False
    warnings = [r.getMessage() for r in caplog.records if "MODEL.RETINANET.WINOGRAD" in r.getMessage()]
    assert len(warnings) == 2 and all("TEST.WINOGRAD" in w and "ignored" in w for w in warnings)
    assert str(path.resolve()) in warnings[0] and "command line" in warnings[1]


def test_retired_key_does_not_hide_typos_next_to_it():
    with pytest.raises(ConfigError, match="MODEL.RETINANET.WINOGRAF"):
        load_config(None, ["MODEL.RETINANET.WINOGRAF=true"])


# ---------------------------------------------------------------- types


@pytest.mark.parametrize("override,key,expected_type", [
    ("SOLVER.BASE_LR=abc", "SOLVER.BASE_LR", "float"),
    ("SOLVER.MAX_ITER=1.5", "SOLVER.MAX_ITER", "int"),
    ("SOLVER.MAX_ITER=true", "SOLVER.MAX_ITER", "int"),
    ("MODEL.FPN.NORM=3", "MODEL.FPN.NORM", "str"),
    ("DATALOADER.ASPECT_RATIO_GROUPING=1", "DATALOADER.ASPECT_RATIO_GROUPING", "bool"),
    ("SOLVER.STEPS={a: 1}", "SOLVER.STEPS", "list"),
    ("SOLVER.BASE_LR=[0.1]", "SOLVER.BASE_LR", "float"),
])
def test_wrong_type_names_key_and_type(override, key, expected_type):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert key in msg and expected_type in msg


def test_wrong_type_of_list_item():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["SOLVER.STEPS=[100, x]"])
    assert "SOLVER.STEPS" in str(info.value) and "int" in str(info.value)


def test_section_given_a_scalar():
    with pytest.raises(ConfigError, match="SOLVER"):
        load_config(None, ["SOLVER=3"])


def test_int_accepted_for_float(tmp_path):
    path = write(tmp_path / "c.yaml", "SOLVER:\n  BASE_LR: 1\n  CLIP_NORM: 16\n")
    cfg = load_config(path)
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.CLIP_NORM == 16.0 and isinstance(cfg.SOLVER.CLIP_NORM, float)


def test_scalar_accepted_for_list_of_scalars(tmp_path):
    path = write(tmp_path / "c.yaml", "INPUT:\n  MIN_SIZE_TRAIN: 576\nDATASETS:\n  TRAIN: my_train\n")
    cfg = load_config(path, ["SOLVER.STEPS=500", "MODEL.RETINANET.BBOX_REG_WEIGHTS=1"])
    assert cfg.INPUT.MIN_SIZE_TRAIN == [576]
    assert cfg.DATASETS.TRAIN == ["my_train"]
    assert cfg.SOLVER.STEPS == [500]
    assert cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS == [1.0]


def test_scalar_of_wrong_type_for_list_is_rejected():
    with pytest.raises(ConfigError, match="INPUT.MIN_SIZE_TRAIN"):
        load_config(None, ["INPUT.MIN_SIZE_TRAIN=big"])


# ---------------------------------------------------------------- dump round trip


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["SOLVER.BASE_LR=0.0125", "SOLVER.STEPS=[3, 4]", "MODEL.FPN.NORM=GN",
                             "SOLVER.MIN_LR=1.0e-8", "DATASETS.TRAIN=[x, y]"])
    text = cfg.dump()
    path = tmp_path / "dumped.yaml"
    path.write_text(text)
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load(text) == cfg.to_dict()


def test_default_dump_round_trip(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(get_cfg().dump())
    assert load_config(path) == get_cfg()


def test_get_cfg_is_a_fresh_copy():
    a = get_cfg()
    a.SOLVER.STEPS.append(1)
    a.SOLVER.BASE_LR = 9.0
    b = get_cfg()
    assert b.SOLVER.BASE_LR != 9.0 and 1 not in b.SOLVER.STEPS


def test_attribute_access_and_missing_attribute():
    cfg = get_cfg()
    assert cfg.SOLVER.BASE_LR == cfg["SOLVER"]["BASE_LR"] == cfg.get_path("SOLVER.BASE_LR")
    with pytest.raises(AttributeError):
        _ = cfg.SOLVER.NOT_A_KEY


# ---------------------------------------------------------------- defaults

REQUIRED = {
    "MODEL.DEVICE": str, "MODEL.WEIGHTS": str, "MODEL.BACKBONE.NAME": str, "MODEL.RESNETS.DEPTH": int,
    "MODEL.FPN.NORM": str, "MODEL.FPN.OUT_CHANNELS": int,
    "MODEL.RETINANET.NORM": str, "MODEL.RETINANET.NUM_CONVS": int, "MODEL.RETINANET.IN_FEATURES": list,
    "MODEL.RETINANET.IOU_THRESHOLDS": list, "MODEL.RETINANET.PRIOR_PROB": float,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": float, "MODEL.RETINANET.FOCAL_LOSS_GAMMA": float,
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": float, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": str,
    "MODEL.RETINANET.SCORE_THRESH_TEST": float, "MODEL.RETINANET.TOPK_CANDIDATES_TEST": int,
    "MODEL.RETINANET.NMS_THRESH_TEST": float,
    "MODEL.ANCHOR_GENERATOR.SIZES": list, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": list,
    "INPUT.MIN_SIZE_TRAIN": list, "INPUT.MAX_SIZE_TRAIN": int, "INPUT.MIN_SIZE_TEST": int,
    "INPUT.MAX_SIZE_TEST": int,
    "DATASETS.TRAIN": list, "DATASETS.TEST": list, "DATASETS.ROOT": str,
    "SOLVER.IMS_PER_BATCH": int, "SOLVER.BASE_LR": float, "SOLVER.MOMENTUM": float,
    "SOLVER.WEIGHT_DECAY": float, "SOLVER.STEPS": list, "SOLVER.MAX_ITER": int, "SOLVER.WARMUP_ITERS": int,
    "SOLVER.LR_DECAY_TYPE": str, "SOLVER.CLIP_NORM": float, "SOLVER.CHECKPOINT_PERIOD": int,
    "TEST.EVAL_PERIOD": int, "TEST.DETECTIONS_PER_IMAGE": int, "TEST.WINOGRAD": bool, "OUTPUT_DIR": str,
    "SEED": int,
}


@pytest.mark.parametrize("key,kind", sorted(REQUIRED.items()))
def test_required_default_exists_with_type(key, kind):
    value = get_cfg().get_path(key)
    assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (key, value)


def test_defaults_are_sane():
    cfg = get_cfg()
    r = cfg.MODEL.RETINANET
    low, high = r.IOU_THRESHOLDS
    assert 0 < low <= high < 1
    assert 0 < r.PRIOR_PROB < 1 and 0 < r.FOCAL_LOSS_ALPHA < 1 and r.FOCAL_LOSS_GAMMA >= 0
    assert 0 <= r.SCORE_THRESH_TEST < 1 and 0 < r.NMS_THRESH_TEST <= 1 and r.TOPK_CANDIDATES_TEST > 0
    assert r.NUM_CONVS >= 1 and r.SMOOTH_L1_LOSS_BETA > 0
    assert r.BBOX_REG_LOSS_TYPE in ("smooth_l1", "l1", "giou", "diou", "ciou")
    assert r.IN_FEATURES == ["P3", "P4", "P5", "P6", "P7"]
    assert cfg.MODEL.FPN.OUT_CHANNELS > 0 and cfg.MODEL.RESNETS.DEPTH in (18, 34, 50, 101, 152)
    assert cfg.INPUT.MIN_SIZE_TRAIN and all(isinstance(s, int) and s > 0 for s in cfg.INPUT.MIN_SIZE_TRAIN)
    assert cfg.INPUT.MAX_SIZE_TRAIN >= max(cfg.INPUT.MIN_SIZE_TRAIN)
    assert cfg.INPUT.MAX_SIZE_TEST >= cfg.INPUT.MIN_SIZE_TEST > 0
    s = cfg.SOLVER
    assert s.IMS_PER_BATCH > 0 and s.BASE_LR > 0 and 0 <= s.MOMENTUM < 1 and s.WEIGHT_DECAY >= 0
    assert s.STEPS == sorted(s.STEPS) and all(isinstance(x, int) for x in s.STEPS)
    assert s.MAX_ITER >= max(s.STEPS) and s.WARMUP_ITERS >= 0 and s.CLIP_NORM >= 0
    assert s.LR_DECAY_TYPE in ("piecewise", "cosine", "constant") and s.CHECKPOINT_PERIOD > 0
    assert cfg.TEST.EVAL_PERIOD >= 0 and cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert cfg.TEST.WINOGRAD is False  # speed-ups that change results by rounding are opt-in
    assert all(isinstance(a, float) for ratios in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS for a in ratios)


def test_default_anchor_sizes_follow_the_log():
    sizes = get_cfg().MODEL.ANCHOR_GENERATOR.SIZES
    assert len(sizes) == 5
    for level, level_sizes in zip(range(3, 8), sizes):
        expected = [32 * 2 ** (level - 3) * 2 ** (k / 3) for k in range(3)]
        assert len(level_sizes) == 3
        for got, want in zip(level_sizes, expected):
            assert math.isclose(got, want, abs_tol=1e-3), (level, got, want)
    assert math.isclose(sizes[4][2], 812.75, abs_tol=1e-2)  # spec §3.5's largest anchor


def test_check_choice_names_key_value_choices_and_closest():
    check_choice("MODEL.FPN.NORM", "GN", ["", "BN", "GN"])
    with pytest.raises(ConfigError) as err:
        check_choice("MODEL.FPN.NORM", "gn", ["", "BN", "GN"])
    assert str(err.value) == "MODEL.FPN.NORM 'gn' is not one of ['', 'BN', 'GN']; did you mean 'GN'?"
    with pytest.raises(ConfigError) as err:
        check_choice("MODEL.RESNETS.DEPTH", 152, [18, 34, 50, 101])
    assert str(err.value) == "MODEL.RESNETS.DEPTH 152 is not one of [18, 34, 50, 101]"


# ---------------------------------------------------------------- edge cases: one-line errors naming key or file


def one_line_error(path_or_none, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path_or_none, list(overrides))
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("base", ["[a.yaml]", "{a: 1}", "3"])
def test_base_that_is_not_a_file_name_names_the_file(tmp_path, base):
    write(tmp_path / "a.yaml", "SEED: 1\n")
    child = write(tmp_path / "child.yaml", f"_BASE_: {base}\nSEED: 2\n")
    message = one_line_error(child)
    assert "child.yaml" in message and "_BASE_" in message


@pytest.mark.parametrize("overrides", [["SOLVER=1", "SOLVER.BASE_LR=2"], ["SEED=1", "SEED.X=2"]])
def test_override_into_a_key_given_a_scalar_names_it(overrides):
    message = one_line_error(None, overrides)
    assert overrides[0].split("=")[0] in message and "command line" in message


@pytest.mark.parametrize("override,key", [
    ("MODEL.PIXEL_MEAN=[a,b,c]", "MODEL.PIXEL_MEAN[0]"),
    ("MODEL.PIXEL_STD=[1.0,x,1.0]", "MODEL.PIXEL_STD[1]"),
    ("MODEL.PIXEL_MEAN=[[1.0]]", "MODEL.PIXEL_MEAN[0]"),
])
def test_items_of_keys_whose_default_is_empty_are_type_checked(override, key):
    message = one_line_error(None, [override])
    assert key in message and "float" in message


def test_items_of_keys_whose_default_is_empty_are_coerced():
    cfg = load_config(None, ["MODEL.PIXEL_MEAN=[103, 116.28, 123]", "MODEL.PIXEL_STD=1"])
    assert cfg.MODEL.PIXEL_MEAN == [103.0, 116.28, 123.0] and all(isinstance(v, float) for v in cfg.MODEL.PIXEL_MEAN)
    assert cfg.MODEL.PIXEL_STD == [1.0]


def test_every_key_whose_default_is_an_empty_list_has_an_item_type():
    from od2.config.config import schema
    from od2.config.defaults import LIST_ITEM_TYPES

    def empty_lists(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from empty_lists(value, f"{prefix}{key}.")
            elif isinstance(value, list) and not value:
                yield f"{prefix}{key}"

    assert set(empty_lists(schema())) <= set(LIST_ITEM_TYPES)


def test_non_utf8_file_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("OUTPUT_DIR: r\xe9sultats\n".encode("latin-1"))
    message = one_line_error(path)
    assert "latin1.yaml" in message and "UTF-8" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_an_error_naming_the_file(tmp_path, text):
    path = write(tmp_path / "empty.yaml", text)
    message = one_line_error(path)
    assert "empty.yaml" in message and "no config keys" in message


def test_empty_base_file_is_an_error_naming_it(tmp_path):
    write(tmp_path / "base.yaml", "")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSEED: 2\n")
    assert "base.yaml" in one_line_error(child)


def test_a_file_holding_only_a_base_loads(tmp_path):
    write(tmp_path / "base.yaml", "SEED: 7\n")
    assert load_config(write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")).SEED == 7


@pytest.mark.parametrize("override,key", [
    ("SOLVER.MAX_ITER=-5", "SOLVER.MAX_ITER"),
    ("SOLVER.MAX_ITER=0", "SOLVER.MAX_ITER"),
    ("INPUT.MIN_SIZE_TRAIN=[0]", "INPUT.MIN_SIZE_TRAIN[0]"),
    ("INPUT.MIN_SIZE_TRAIN=[512, -1]", "INPUT.MIN_SIZE_TRAIN[1]"),
    ("INPUT.MAX_SIZE_TEST=0", "INPUT.MAX_SIZE_TEST"),
    ("SOLVER.CHECKPOINT_PERIOD=-1", "SOLVER.CHECKPOINT_PERIOD"),
    ("TEST.EVAL_PERIOD=-100", "TEST.EVAL_PERIOD"),
    ("LOG_PERIOD=-20", "LOG_PERIOD"),
    ("SOLVER.IMS_PER_BATCH=0", "SOLVER.IMS_PER_BATCH"),
    ("DATALOADER.NUM_WORKERS=-1", "DATALOADER.NUM_WORKERS"),
    ("INPUT.RANDOM_FLIP=1.5", "INPUT.RANDOM_FLIP"),
    ("INPUT.STITCH=-0.1", "INPUT.STITCH"),
    ("MODEL.RETINANET.PRIOR_PROB=0", "MODEL.RETINANET.PRIOR_PROB"),
    ("MODEL.RETINANET.IOU_THRESHOLDS=[0.4, 1.5]", "MODEL.RETINANET.IOU_THRESHOLDS[1]"),
    ("MODEL.RETINANET.NMS_THRESH_TEST=2", "MODEL.RETINANET.NMS_THRESH_TEST"),
    ("MODEL.ANCHOR_GENERATOR.SIZES=[[32, -64]]", "MODEL.ANCHOR_GENERATOR.SIZES[0][1]"),
    ("MODEL.PIXEL_STD=[1.0, 0.0, 1.0]", "MODEL.PIXEL_STD[1]"),
    ("SOLVER.STEPS=[-3]", "SOLVER.STEPS[0]"),
    ("SOLVER.BASE_LR=-0.01", "SOLVER.BASE_LR"),
    ("MODEL.EMA.DECAY=1.5", "MODEL.EMA.DECAY"),
    ("TEST.DETECTIONS_PER_IMAGE=0", "TEST.DETECTIONS_PER_IMAGE"),
])
def test_value_out_of_range_is_a_one_line_error_naming_key_and_range(override, key):
    message = one_line_error(None, [override])
    assert key in message and "command line" in message and "must be" in message, message


def test_value_out_of_range_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path / "neg.yaml", "SOLVER:\n  MAX_ITER: -5\n")
    message = one_line_error(path)
    assert "neg.yaml" in message and "SOLVER.MAX_ITER" in message and ">= 1" in message


@pytest.mark.parametrize("override", [
    "SOLVER.CHECKPOINT_PERIOD=0", "TEST.EVAL_PERIOD=0", "LOG_PERIOD=0", "DATALOADER.NUM_WORKERS=0",
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA=-1", "SOLVER.WEIGHT_DECAY_BIAS=-1", "INPUT.RANDOM_FLIP=1",
    "INPUT.STITCH=0", "SOLVER.CLIP_NORM=0", "MODEL.RETINANET.NUM_CLASSES=0", "SOLVER.MAX_ITER=1",
])
def test_values_at_the_edge_of_their_range_load(override):
    load_config(None, [override])


def test_every_ranged_key_exists_and_its_default_is_in_range():
    from od2.config.defaults import VALUE_RANGES

    cfg = get_cfg()
    for key, value_range in VALUE_RANGES.items():
        value = cfg.get_path(key)
        items = [value]
        while items and isinstance(items[0], list):
            items = [item for sub in items for item in sub]
        assert all(item in value_range for item in items), (key, value, value_range)


def test_yaml_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    config = tmp_path / "evil.yaml"
    config.write_text(f"SEED: {tag}\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(config)
    with pytest.raises(ConfigError):
        load_config(None, [f"SEED={tag}"])
    assert not marker.exists()
