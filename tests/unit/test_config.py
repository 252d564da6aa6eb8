import importlib.util
import pickle
import sys
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import (
    demo,
    dit_l,
    dit_xl,
    sit_b,
    sit_l,
    sit_xl,
    table2_alignment,
    table3_weights,
    table5_encoders,
)
from sara_jax.config import base_config, flat_items, set_alignment, validate
from sara_jax.config.rules import check_name
from sara_jax.io.errors import InputError


@pytest.mark.parametrize(
    "module,depth,hidden,heads,encoder_depth,steps",
    [
        (sit_b, 12, 768, 12, 4, 400_000),
        (sit_l, 24, 1024, 16, 8, 400_000),
        (sit_xl, 28, 1152, 16, 8, 2_000_000),
    ],
)
def test_paper_configs_hold_table_4(module, depth, hidden, heads, encoder_depth, steps):
    c = module.get_config()
    validate(c, num_devices=8)
    m = c.model
    assert (m.depth, m.hidden_size, m.num_heads, m.patch_size) == (depth, hidden, heads, 2)
    assert (m.encoder_depth, c.train.num_steps) == (encoder_depth, steps)
    assert (m.input_size, m.in_channels, m.class_dropout) == (32, 4, 0.1)
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.5, 0.5, 0.05)
    assert (c.optim.lr, c.optim.b1, c.optim.b2, c.optim.weight_decay) == (1e-4, 0.9, 0.999, 0)
    assert (c.data.global_batch_size, c.train.ema_decay, c.disc.every) == (256, 0.9999, 5)
    assert c.encoder.name == "dinov2_vitb14" and c.projector.width == 2048


@pytest.mark.parametrize("module,depth,hidden", [(dit_l, 24, 1024), (dit_xl, 28, 1152)])
@pytest.mark.parametrize(
    "arg,weights", [("sara", (0.5, 0.5, 0.05)), ("repa", (0.5, 0, 0)), ("none", (0, 0, 0))]
)
def test_dit_configs_are_the_six_dit_rows_of_table_1a(module, depth, hidden, arg, weights):
    c = module.get_config(arg)
    validate(c, num_devices=8)
    m = c.model
    assert (m.family, m.depth, m.hidden_size, m.num_heads, m.patch_size) == (
        "dit",
        depth,
        hidden,
        16,
        2,
    )
    assert (m.encoder_depth, c.train.num_steps, c.encoder.name) == (8, 400_000, "dinov2_vitb14")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == weights
    d = c.diffusion
    assert (d.num_timesteps, d.beta_start, d.beta_end) == (1000, 1e-4, 0.02)
    # Evaluated as the DiT paper: 250 DDPM steps, no guidance.
    assert (c.sample.method, c.sample.num_steps, c.sample.cfg_scale) == ("ddpm", 250, 1.0)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"model.family": "sit2"}, r"config.model.family must be one of \('sit', 'dit'\)"),
        (
            {"sample.method": "sde"},
            r"sample.method must be one of \('ddpm',\) for model.family='dit'",
        ),
        (
            {"model.family": "sit"},
            r"sample.method must be one of \('sde', .* for model.family='sit'",
        ),
        (
            {"sample.num_steps": 1001},
            r"sample.num_steps must be in \[2, diffusion.num_timesteps=1000\]",
        ),
        (
            {"eval.num_steps": 1},
            r"eval.num_steps must be in \[2, diffusion.num_timesteps=1000\] for the DDPM",
        ),
        (
            {"sample.guidance_high": 0.7},
            r"sample.guidance_low must be 0.0 with sample.guidance_high 1.0",
        ),
        (
            {"sample.ddpm_cfg_channels": 5},
            r"sample.ddpm_cfg_channels must be <= model.in_channels=4",
        ),
        (
            {"diffusion.beta_end": 5e-5},
            r"diffusion.beta_end must be in \[diffusion.beta_start=0.0001, 1\)",
        ),
        ({"diffusion.beta_start": 0.0}, r"diffusion.beta_start must be > 0"),
    ],
)
def test_dit_fields_are_checked(changes, message):
    c = dit_xl.get_config()
    for field, value in changes.items():
        section, name = field.split(".")
        c[section][name] = value
    with pytest.raises(ValueError, match=message):
        validate(c)


def test_demo_config_is_valid_and_small():
    c = demo.get_config()
    validate(c, num_devices=8)
    assert c.data.space == "pixel" and c.data.num_classes >= 10
    assert c.encoder.name == "demo_vit"
    # It evaluates itself with the shapes classifier, which only the shapes data has.
    assert (c.eval.featurizer, c.data.source) == ("shapes", "shapes")
    c.data.source = "records"
    with pytest.raises(ValueError, match=r"config.eval.featurizer must be 'inception' unless"):
        validate(c, num_devices=8)
    c.eval.every = 0
    validate(c, num_devices=8)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("optim.lr", -1e-4, r"config.optim.lr must be > 0"),
        ("disc.optim.lr", 0.0, r"config.disc.optim.lr must be > 0"),
        ("model.encoder_depth", 29, r"config.model.encoder_depth must be in \[1, model.depth=28\]"),
        ("disc.every", 0, r"config.disc.every must be >= 1"),
        ("optim.b2", 1.0, r"config.optim.b2 must be in \[0, 1\)"),
        ("loss.struc_reduction", "max", r"config.loss.struc_reduction must be 'mean' or 'sum'"),
        ("model.num_heads", 7, r"config.model.hidden_size must be divisible by model.num_heads"),
        # The SiT follows the data to pixels (256 x 256 / 2^2 tokens); the encoder does not.
        ("data.space", "pixel", r"config.encoder.image_size must be such that .* SiT \(16384\)"),
        ("model.input_size", 16, r"config.model.input_size must be 32 for data.space='latent'"),
        ("model.in_channels", 3, r"config.model.in_channels must be 4 for data.space='latent'"),
        ("model.num_classes", 10, r"config.model.num_classes must be equal to data.num_classes"),
        ("model.compute_dtype", "float16", r"config.model.compute_dtype must be one of"),
        ("train.ema_decay", 1.5, r"config.train.ema_decay must be in \[0, 1\]"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    c = sit_xl.get_config()
    section, name = field.rsplit(".", 1)
    node = c
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=message):
        validate(c)


@pytest.mark.parametrize(
    "space,image_size,input_size,in_channels,encoder_patch",
    [("pixel", 32, 32, 3, 4), ("latent", 64, 8, 4, 32)],
)
def test_model_input_follows_the_data_fields(
    space, image_size, input_size, in_channels, encoder_patch
):
    c = demo.get_config()  # Sets the data fields only.
    c.data.space, c.data.image_size, c.data.num_classes = space, image_size, 7
    c.encoder.image_size, c.encoder.arch.patch_size = image_size, encoder_patch
    m = c.model
    assert (m.input_size, m.in_channels, m.num_classes) == (input_size, in_channels, 7)
    validate(c)
    flat = dict(flat_items(c))
    assert (flat["model.input_size"], flat["model.in_channels"]) == (input_size, in_channels)
    assert c.to_dict()["model"]["num_classes"] == 7
    copy = pickle.loads(pickle.dumps(c))  # Still linked to its own data fields.
    copy.data.num_classes = 5
    assert (copy.model.num_classes, c.model.num_classes) == (5, 7)


def test_a_model_field_assigned_stays_and_must_agree():
    c = base_config()
    c.model.num_classes = 1000  # As a config file written before the fields were derived.
    c.data.num_classes = 10  # The model no longer follows: validate names the field.
    assert (c.model.num_classes, c.data.num_classes) == (1000, 10)
    with pytest.raises(ValueError, match=r"config.model.num_classes must be equal to data"):
        validate(c)
    c.model.num_classes = 10
    validate(c)


def test_command_line_data_fields_carry_over_to_the_model(monkeypatch):
    # As `--config=configs/demo.py --config.data.image_size=64 ...` (config_flags reads the
    # overrides from sys.argv): the parsed config's model fields follow the data fields.
    argv = ["prog", "--config=configs/demo.py", "--config.data.image_size=64"]
    argv += ["--config.encoder.image_size=64", "--config.encoder.arch.patch_size=4"]
    argv += ["--config.data.num_classes=3"]
    monkeypatch.setattr(sys, "argv", argv)
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
    flag_values(argv)
    c = flag_values.config
    assert (c.model.input_size, c.model.in_channels, c.model.num_classes) == (64, 3, 3)
    validate(c)


def test_unknown_missing_and_mistyped_fields():
    c = base_config()
    c.optim.lrr = 1e-4
    with pytest.raises(
        InputError, match=r"config.optim.lrr is not a known field .*closest: optim.lr"
    ):
        validate(c)
    c = base_config()
    del c.disc["every"]
    with pytest.raises(ValueError, match=r"config.disc.every is missing"):
        validate(c)
    d = base_config().to_dict()
    d["train"]["num_steps"] = 10.5  # a float where an int is needed
    c = ml_collections.ConfigDict(d)
    with pytest.raises(ValueError, match=r"config.train.num_steps must be of type int"):
        validate(c)


def test_a_name_of_no_field_names_its_section_and_the_closest_fields():
    """What `--config.<name>=...` of no field says (io/cli.check_config_args)."""
    c = base_config()
    check_name(c, "model.input_size")  # Derived fields and sections are names too.
    check_name(c, "encoder.arch")
    with pytest.raises(
        InputError, match=r"^config.train has no field 'batch_size'; closest: "
    ) as e:
        check_name(c, "train.batch_size")
    assert "sample.batch_size" in str(e.value) and "data.global_batch_size" in str(e.value)
    with pytest.raises(InputError, match=r"^config.optim has no field 'lrr'; closest: optim.lr, "):
        check_name(c, "optim.lrr")
    with pytest.raises(InputError, match=r"^config has no section or field 'zzz'; it has data, "):
        check_name(c, "zzz")
    with pytest.raises(InputError, match=r"^config.optim.lr is a float field, it has no field 'x'"):
        check_name(c, "optim.lr.x")


def test_batch_must_divide_over_devices_and_tokens_must_match():
    c = demo.get_config()
    c.data.global_batch_size = 12
    with pytest.raises(
        ValueError, match=r"data.global_batch_size must be divisible by the number of devices \(8\)"
    ):
        validate(c, num_devices=8)
    c = demo.get_config()
    c.encoder.pretrain.num_examples = 100
    with pytest.raises(ValueError, match=r"encoder.pretrain.batch_size must be <= encoder"):
        validate(c)
    c = demo.get_config()
    c.encoder.arch.patch_size = 8
    with pytest.raises(
        ValueError,
        match=r"as many tokens as the SiT \(64\), not 16",
    ):
        validate(c)


def test_sampler_fields_are_checked():
    c = base_config()
    c.sample.method = "ddim"
    with pytest.raises(ValueError, match=r"config.sample.method must be one of \('sde'"):
        validate(c)
    c = base_config()
    c.sample.guidance_low, c.sample.guidance_high = 0.5, 0.4
    with pytest.raises(ValueError, match=r"sample.guidance_high must be >= sample.guidance_low"):
        validate(c)


def test_encoder_fields_are_checked():
    c = base_config()
    c.encoder.name = "dinov2_vitb16"
    with pytest.raises(ValueError, match=r"config.encoder.name must be one of \[.*'dinov2_vitb14'"):
        validate(c)
    c = base_config()
    c.encoder.image_size = 256
    with pytest.raises(ValueError, match=r"config.encoder.image_size must be divisible by the "):
        validate(c)
    c.encoder.image_size = 252
    with pytest.raises(ValueError, match=r"encoder.image_size must be such that the encoder has "):
        validate(c)
    c = base_config()
    c.encoder.checkpoint = ""
    with pytest.raises(ValueError, match=r"encoder.checkpoint must be .*'facebook/dinov2-base'"):
        validate(c)


def every_config():
    """(file name, arg) for every configs/*.py file and each of its paper variants."""
    for path in sorted(Path("configs").glob("*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for arg in getattr(module, "VARIANTS", (None,)):
            yield path.name, module, arg


@pytest.mark.parametrize("name,module,arg", list(every_config()))
def test_every_config_file_and_variant_validates(name, module, arg):
    c = module.get_config() if arg is None else module.get_config(arg)
    validate(c, num_devices=8)


def test_variants_switch_the_right_terms():
    c = sit_l.get_config("repa")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.5, 0.0, 0.0)
    c = sit_b.get_config("none")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.0, 0.0, 0.0)
    c = table2_alignment.get_config("struc,adv")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.0, 0.5, 0.05)
    c = table3_weights.get_config("0.1,0.01")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.5, 0.1, 0.01)
    c = table5_encoders.get_config("dinov2_vitg14,repa,12")
    assert c.encoder.checkpoint == "facebook/dinov2-giant" and c.model.encoder_depth == 12
    assert (c.model.depth, c.loss.struc_weight) == (24, 0.0)
    c = table5_encoders.get_config("clip_vitl14,sara,8")
    assert c.encoder.checkpoint == "openai/clip-vit-large-patch14"
    assert sit_xl.get_config().sample.cfg_scale == 1.35
    with pytest.raises(ValueError, match="unknown alignment terms"):
        set_alignment(base_config(), "patch,strucc")


def test_irepa_rows_and_variants_take_irepas_two_changes():
    c = table2_alignment.get_config("irepa")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (1.0, 0.0, 0.0)
    assert (c.projector.kind, c.projector.kernel_size, c.loss.encoder_norm) == ("conv", 3, "zscore")
    c = sit_b.get_config("sara_irepa")
    assert (c.loss.patch_weight, c.loss.struc_weight, c.loss.adv_weight) == (0.5, 0.5, 0.05)
    assert (c.projector.kind, c.loss.zscore_alpha) == ("conv", 0.6)
    # The defaults stay REPA's projection; a subset of terms leaves the fields as they are.
    c = base_config()
    assert (c.projector.kind, c.loss.encoder_norm) == ("mlp", "none")
    c.projector.kind = "conv"
    set_alignment(c, "patch,struc")
    assert c.projector.kind == "conv"
    with pytest.raises(ValueError, match="or a method: sara, repa, none, irepa, sara_irepa"):
        set_alignment(c, "irepaa")


@pytest.mark.parametrize(
    "module,arg,message",
    [
        (sit_xl, "bogus", r"unknown method 'bogus'; choose from sara, repa, none"),
        (table5_encoders, "dinov2_vitb14,repaa,8", r"unknown method 'repaa'"),
        (table5_encoders, "foo,sara,8", r"'foo,sara,8': expected ENCODER,.*clip_vitl14"),
        (table5_encoders, "dinov2_vitb14", r"expected ENCODER,METHOD,DEPTH \(e\.g\. dinov2_vitb14"),
    ],
)
def test_a_bad_config_argument_names_the_choices(module, arg, message):
    with pytest.raises(ValueError, match=message):
        module.get_config(arg)
