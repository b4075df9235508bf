"""RunConfig names everything, checks everything when built, and keeps its keys stable."""

import dataclasses

import pytest
import torch

from opai_lib import concepts, config, criteria, expanders, masks, models, study
from opai_lib.config import Recipe
from opai_lib.materials import Material
from opai_lib.methods import METHODS
from opai_lib.study import RunConfig

SMOKE = config.get_profile("smoke")


def test_every_criterion_and_generator_is_a_method_of_its_kind():
    kinds = {name: METHODS.get(name).kind for name in METHODS.names()}
    assert kinds["dense"] == "dense"
    assert {n for n, k in kinds.items() if k == "criterion"} == set(criteria.CRITERIA.names())
    assert {METHODS.get(n).member for n, k in kinds.items() if k == "expander"} == \
        set(expanders.GENERATORS.names())


# Keys pinned by hand: a change here changes the name of every published record, so it must
# be deliberate (and the record recomputed). Update only with `make record`.
PINNED = [
    (RunConfig(), "7964e7cbaf66c357"),
    (RunConfig(method="snip", sparsity=0.9), "1055824c87fc5ee1"),
    (RunConfig(method="grasp", sparsity=0.98, material=Material("dop", per_class=30),
               recipe=Recipe(epochs=4)), "29f0b5226e39a03d"),
    (RunConfig(method="expander:rreg", sparsity=0.9,
               options=expanders.ExpanderOptions(best_of=5)), "ef99e13691b2253b"),
]


@pytest.mark.parametrize("cfg,key", PINNED)
def test_keys_are_pinned(cfg, key):
    assert cfg.key() == key


def test_key_holds_every_option_and_resolved_default():
    base = RunConfig(method="grasp", sparsity=0.9,
                     material=Material("stitch"))
    assert base.material.sigma == 0.5 and base.material.top == 5
    assert base.material.test == "null" and base.material.ace is not None
    assert base.options == criteria.GraspOptions()
    others = [
        dataclasses.replace(base, material=Material("stitch", sigma=0.75)),
        dataclasses.replace(base, material=Material("stitch", top=3)),
        dataclasses.replace(base, material=Material("stitch", test="ttest")),
        dataclasses.replace(base, material=Material("stitch", batches=2)),
        dataclasses.replace(base, options=criteria.GraspOptions(bn_mode="eval")),
        dataclasses.replace(base, options=criteria.GraspOptions(rounds=2)),
    ]
    keys = {c.key() for c in [base, *others]}
    assert len(keys) == len(others) + 1
    # the defaults written out give the same run
    explicit = dataclasses.replace(base, options=criteria.GraspOptions(temperature=200.0),
                                   material=Material("stitch", sigma=0.5, top=5))
    assert explicit.key() == base.key()


def test_a_change_of_the_default_discovery_changes_the_key(monkeypatch):
    cfg = RunConfig(method="snip", sparsity=0.9, material=Material("dop"))
    classifier, ace = concepts.default_discovery("cifar10")
    assert (cfg.material.classifier, cfg.material.ace) == (classifier, ace)
    changed = dataclasses.replace(ace, n_clusters=21)
    monkeypatch.setattr(concepts, "default_discovery", lambda dataset: (classifier, changed))
    again = RunConfig(method="snip", sparsity=0.9, material=Material("dop"))
    assert again.material.ace == changed and again.key() != cfg.key()
    # a material naming the old settings stays the run it was (its discovery is named)
    assert RunConfig(method="snip", sparsity=0.9, material=cfg.material).key() == cfg.key()


@pytest.mark.parametrize("fields,message", [
    (dict(method="snip", sparsity=0.9, options=criteria.GraspOptions()), "RunConfig.options"),
    (dict(method="grasp", sparsity=0.9, options=criteria.SnipOptions()), "RunConfig.options"),
    (dict(method="expander:rreg", sparsity=0.9, material=Material()), "RunConfig.material"),
    (dict(method="dense", sparsity=0.5), "RunConfig.sparsity"),
    (dict(method="snipp"), "unknown method 'snipp'"),
    (dict(width=0.0), "RunConfig.width"),
    (dict(width=float("inf")), "RunConfig.width"),
    (dict(method="expander:xnet", sparsity=0.5, options=expanders.ExpanderOptions(degree=3)),
     "0 when the expander's degree sizes the mask"),
    (dict(method="snip", sparsity=0.9, train_per_class=20,
          material=Material("image", per_class=10, batches=3)),
     "at most 20 training images per class"),
    (dict(method="snip", sparsity=0.9, material=Material("dop", classifier="mine@layer1")),
     "Material.classifier = 'mine@layer1'; allowed: None, 'pretrained-"),
    (dict(method="snip", sparsity=0.9, dataset="cifar100", material=Material("dop")),
     "no default concept discovery for dataset 'cifar100'"),
    (dict(seed=-1), "RunConfig.seed"),
    (dict(seed=1.5), "RunConfig.seed must be of type int"),
    (dict(train_per_class=6000), "RunConfig.train_per_class = 6000"),
    (dict(test_per_class=1001), "RunConfig.test_per_class = 1001"),
])
def test_bad_configs_fail_when_built(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RunConfig(**fields)


@pytest.mark.parametrize("build,message", [
    (lambda: criteria.SnipOptions(bn_mode="foo"), "SnipOptions.bn_mode must be one of"),
    (lambda: expanders.ExpanderOptions(best_of=0), "ExpanderOptions.best_of = 0"),
    (lambda: METHODS.get("grasp").options(temprature=1.0), r"unknown option\(s\) \['temprature'\]"),
    (lambda: Material("image", sigma=0.75), "Material.sigma = 0.75; allowed: None"),
    (lambda: Material("stitch", sigma=1.5), "Material.sigma = 1.5"),
    (lambda: Material("dop", test="chi2"), "Material.test"),
    (lambda: Material("less_patch", per_class=2), "Material.per_class"),
    (lambda: Material("photos"), "unknown material 'photos'"),
    (lambda: Material("image", per_class=0), "Material.per_class = 0"),
    (lambda: Material("less_patch", per_class=1, batches=2), "Material.batches = 2"),
])
def test_bad_options_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_precision_auto_follows_the_machine(monkeypatch):
    monkeypatch.setattr(config, "native_bf16", lambda: False)
    assert RunConfig(recipe=Recipe(precision="auto")).recipe.precision == "fp32"
    assert RunConfig(recipe=Recipe(precision="auto"), device="cuda").recipe.precision == "bf16"
    with pytest.raises(ValueError, match="would be emulated.*fp32"):
        RunConfig(recipe=Recipe(precision="bf16"))
    with pytest.raises(ValueError, match="fp16' needs CUDA"):
        RunConfig(recipe=Recipe(precision="fp16"))
    monkeypatch.setattr(config, "native_bf16", lambda: True)
    assert RunConfig(recipe=Recipe(precision="auto")).recipe.precision == "bf16"
    # the resolved precision is in the key: auto and its resolution are one run
    assert RunConfig(recipe=Recipe(precision="auto")).key() == \
        RunConfig(recipe=Recipe(precision="bf16")).key()


@pytest.mark.parametrize(("flags", "capability", "onednn", "native"), [
    ({"avx512_bf16"}, "AVX512", None, True),
    ({"amx_bf16"}, "AVX512", "avx512_core_amx", True),
    ({"avx2"}, "AVX2", None, False),  # a Zen 3
    ({"amx_bf16"}, "AVX2", None, False),  # ATEN_CPU_CAPABILITY=avx2
    ({"amx_bf16"}, "AVX512", "AVX2", False),  # ONEDNN_MAX_CPU_ISA=AVX2
    ({"avx512_bf16"}, "AVX512", "avx512_core", False),
])
def test_native_bf16_needs_the_cpu_and_torch_free_to_use_it(monkeypatch, flags, capability,
                                                            onednn, native):
    monkeypatch.setattr(config, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if onednn is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    assert config.native_bf16() is native


def test_the_published_profile_trains_in_fp32():
    assert config.get_profile("cpu").recipe.precision == "fp32"


def test_a_profile_keeps_auto_until_a_run_resolves_it(monkeypatch):
    monkeypatch.setattr(config, "native_bf16", lambda: False)
    profile = config.get_profile("cifar-gpu", device="cpu")
    assert profile.recipe.precision == "auto"
    assert study.config_from_profile(profile).recipe.precision == "fp32"


def test_defaults_written_out_are_the_same_run():
    cfg = RunConfig(method="snip", sparsity=0.9, material=Material("dop"))
    explicit = RunConfig(method="snip", sparsity=0.9, material=Material(
        "dop", per_class=10, top=5, test="null", classifier=cfg.material.classifier,
        ace=cfg.material.ace))
    assert explicit.key() == cfg.key()
    one = study.config_from_profile(SMOKE, model="tiny", method="grasp", sparsity=0.5,
                                    material="less_patch")
    assert (one.material.per_class, one.material.batches) == (1, 1)


def test_material_batches_are_class_balanced_and_distinct(toy):
    train, _ = toy
    batches = Material("image", per_class=3, batches=2).make(train, seed=0)
    assert len(batches) == 2
    for x, y in batches:
        assert torch.equal(y, torch.arange(10).repeat_interleave(3))
        assert x.shape == (30, 3, 32, 32)
    assert not any(torch.equal(a, b) for a in batches[0][0] for b in batches[1][0])
    # the two batches split one class-balanced draw of 6 per class
    one = Material("image", per_class=6).make(train, seed=0)[0][0]
    joined = torch.cat([torch.cat([b[0][3 * k:3 * k + 3] for b in batches]) for k in range(10)])
    assert torch.equal(joined, one)


def test_diagnostics_by_hand():
    mask = {"a": torch.tensor([True, False, False, False]),
            "b": torch.tensor([[True, True], [True, False]]),
            "c": torch.zeros(3, dtype=torch.bool)}
    d = masks.diagnostics(mask, {"a": "stage1", "b": "stage2", "c": "head"})
    assert d["density"] == pytest.approx(4 / 11)
    assert d["layer_density"] == {"a": 0.25, "b": 0.75, "c": 0.0}
    assert d["empty_layers"] == ["c"]
    assert d["sparsest_layer"] == {"name": "c", "density": 0.0}
    assert d["stage_share"] == {"stage1": 0.25, "stage2": 0.75, "head": 0.0}
    with pytest.raises(ValueError, match="no stage given"):
        masks.diagnostics(mask, {"a": "stage1"})


def test_stages_follow_the_feature_map_resolution():
    s = models.stages(models.get_model("resnet20"))
    assert s["conv1.weight"] == s["layer1.2.conv2.weight"] == "stage1"
    assert s["layer2.0.conv1.weight"] == "stage2"  # the strided block makes stage 2
    assert s["layer3.2.conv2.weight"] == "stage3" and s["linear.weight"] == "head"
    vgg = models.stages(models.get_model("vgg16_bn", width=0.25))
    assert sorted(set(vgg.values())) == ["head", "stage1", "stage2", "stage3", "stage4",
                                         "stage5"]


def test_packed_masks_read_back(tmp_path):
    g = torch.Generator().manual_seed(0)
    mask = {"w": torch.rand(5, 3, 3, 3, generator=g) > 0.7, "v": torch.rand(7, generator=g) > 0.5}
    record = {"key": "k", "mask_shapes": {n: list(m.shape) for n, m in mask.items()}}
    store = study.Store(tmp_path)
    store.write("k", record, study.pack_mask(mask))
    back = study.read_mask(record, store)
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    assert study.mask_sha256(back) == study.mask_sha256(mask)
    flipped = {**mask, "v": ~mask["v"]}
    assert study.mask_sha256(flipped) != study.mask_sha256(mask)


@pytest.mark.slow
def test_a_concept_material_run_draws_from_the_named_discovery():
    cfg = study.config_from_profile(SMOKE, model="tiny", method="snip", sparsity=0.8,
                                    material=Material("dop", per_class=2, batches=2))
    assert cfg.material.classifier == "synthetic-tiny-2-epochs-seed-0@bn1"
    train_set, _ = study.run_data(cfg.dataset, cfg.train_per_class, cfg.test_per_class)
    batches = cfg.material.make(train_set, cfg.seed)
    assert [tuple(y.tolist()) for _, y in batches] == \
        [tuple(torch.arange(10).repeat_interleave(2).tolist())] * 2
    model = models.get_model("tiny", seed=0)
    mask = study.make_mask(cfg, model, train_set)
    assert masks.density(mask)["total"] == pytest.approx(0.2, abs=1e-3)
    # a material naming a classifier that is neither built in nor the default is refused
    other = dataclasses.replace(cfg.material, classifier="someone-else@layer1")
    with pytest.raises(ValueError, match="classifier = 'someone-else@layer1'.*default "
                       "discovery's of synthetic"):
        other.make(train_set, cfg.seed)
    with pytest.raises(ValueError, match="Material.classifier = 'torchvision:resnet50@x'"):
        Material("dop", classifier="torchvision:resnet50@x").for_dataset("synthetic")


def test_the_smoke_profile_caps_iterative_criteria_rounds():
    smoke, cpu = config.get_profile("smoke"), config.get_profile("cpu")
    assert smoke.max_rounds == 5 and cpu.max_rounds == 0
    for method, own in [("synflow", 100), ("iter_snip", 60), ("force", 60), ("snip", 1)]:
        at_smoke = study.config_from_profile(smoke, model="tiny", method=method, sparsity=0.9)
        at_cpu = study.config_from_profile(cpu, method=method, sparsity=0.9)
        assert (at_smoke.options.rounds, at_cpu.options.rounds) == (min(own, 5), own)
        assert at_cpu.options == METHODS.get(method).options()  # the record's keys stay
    fewer = criteria.SynflowOptions(rounds=3)
    assert study.config_from_profile(smoke, method="synflow", sparsity=0.9,
                                     options=fewer).options == fewer
    with pytest.raises(ValueError, match="Profile.max_rounds"):
        config.get_profile("smoke", max_rounds=-1)
