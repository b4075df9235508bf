"""ImageNet end to end on a tiny generated class-folder tree: the folder dataset answers what
a run asks, and SNIP and DOP (concepts of a given torchvision classifier) train through the
path a chapter's runs take (``config_from_profile`` -> ``study.sweep``)."""

import numpy as np
import pytest
import torch
from PIL import Image

from opai_lib import concepts, config, data, masks, models, study
from opai_lib.materials import Material

CLASSES = ("n01440764", "n01443537", "n01484850")
TRAIN, VAL = 10, 2  # images per class


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """train/ (JPEG) and val/ (PNG) of three classes, each a colour plus noise, of sizes
    that are neither square nor the 64 px they are read at."""
    rng = np.random.default_rng(0)
    for split, count, ext in (("train", TRAIN, "JPEG"), ("val", VAL, "png")):
        for k, wnid in enumerate(CLASSES):
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(count):
                colour = np.zeros(3)
                colour[k] = 200
                pixels = colour + rng.normal(0, 40, (72 + 4 * i, 90, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                    tmp_path / "imagenet" / split / wnid / f"{i}.{ext}")
    monkeypatch.setenv("OPAI_IMAGENET_DIR", str(tmp_path / "imagenet"))
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    study.run_data.cache_clear()
    yield tmp_path
    study.run_data.cache_clear()


def test_the_folder_answers_what_an_image_set_answers(tree):
    train = data.load_dataset("imagenet64", "train")
    assert (len(train), train.num_classes, train.classes) == (3 * TRAIN, 3, list(CLASSES))
    assert train.labels.tolist() == [k for k in range(3) for _ in range(TRAIN)]
    assert train.images.shape == (3 * TRAIN, 64, 64, 3)
    x = train.images[torch.tensor([0, TRAIN + 1, 2 * TRAIN + 2])]
    assert x.dtype == torch.uint8 and x.shape == (3, 64, 64, 3)
    # each image keeps its class's colour: channel k is the brightest of class k
    assert x.float().mean((1, 2)).argmax(1).tolist() == [0, 1, 2]
    sub = train.subset(data.balanced_indices(train.labels, 4, seed=1))
    assert len(sub) == 12 and torch.bincount(sub.labels).tolist() == [4, 4, 4]
    assert torch.equal(sub.images[torch.tensor([5])], train.images[
        torch.tensor([train.paths.index(sub.paths[5])])])
    assert data.load_dataset("imagenet", "test").images.shape == (3 * VAL, 224, 224, 3)
    xb, yb = next(iter(data.batches(train, 6, train=True, workers=0)))
    assert xb.shape == (6, 3, 64, 64) and xb.dtype == torch.float32 and len(yb) == 6


def small_ace() -> concepts.ACESettings:
    """ACE at the scale of the tree: 4 discovery and 4 TCAV images a class, no test."""
    return concepts.ACESettings(n_segments=(4, 8), compactness=20.0, discovery_images=4,
                                tcav_images=4, n_clusters=2, min_cluster_size=0,
                                concept_size=4, num_negatives=2, num_null=2, level=0.5,
                                material_test="none")


def test_snip_and_dop_runs_on_an_image_folder(tree):
    """A network pruned to 90 % by SNIP fed images, and by SNIP fed DOP patches of a given
    classifier (torchvision's ResNet-18 from a weights file), trained one epoch and
    evaluated, as records of a store. The tiny net keeps it to seconds (ResNet-50 takes
    minutes on a CPU: its mask is checked below)."""
    import torchvision

    (tree / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(),
               tree / "torch" / "hub" / "checkpoints" / "mine.pth")
    profile = config.get_profile(
        "imagenet", dataset="imagenet64", device="cpu", score_per_class=2,
        recipe=config.Recipe(epochs=1, batch_size=6, lr=0.01, schedule="constant"))
    dop = Material("dop", per_class=2, classifier="torchvision:resnet18:mine.pth@layer3.0",
                   ace=small_ace())
    cfgs = [study.config_from_profile(profile, material=m, model="tiny", method="snip",
                                      sparsity=0.9, seed=0) for m in ("image", dop)]
    assert cfgs[1].material.test == "none"  # the given settings' test
    records = study.sweep(cfgs, tree / "store")
    model = models.get_model("tiny", num_classes=3)
    prunable = {n: list(p.shape) for n, p in model.named_parameters() if p.ndim > 1}
    for r in records:
        assert (r["data"], r["train_images"], r["test_images"]) == ("ImageNet 64px", 30, 6)
        assert r["density"] == pytest.approx(0.1, abs=1e-3)
        assert r["mask_shapes"] == prunable and len(r["history"]) == 1
        assert r["accuracy"] in [k / 6 for k in range(7)]  # of the 6 validation images
    assert records[0]["mask_sha256"] != records[1]["mask_sha256"]  # the material mattered
    # the discovery ran with the named classifier and is cached under its name
    found = concepts.discover(concepts.named_classifier(cfgs[1].material.classifier,
                                                        study.run_data("imagenet64", 0, 0)[0]),
                              study.run_data("imagenet64", 0, 0)[0], settings=small_ace())
    assert found.classifier == "torchvision:resnet18:mine.pth" and found.layer == "layer3.0"
    assert study.sweep(cfgs, tree / "store") == records  # read back, not recomputed


@pytest.mark.slow
def test_a_chapters_model_name_picks_resnet50_for_imagenet(tree):
    """``model_name resnet50``: torchvision's ResNet-50 with the folder's classes;
    SNIP prunes it and a record's per-stage diagnostics read its layers."""
    profile = config.get_profile("imagenet", dataset="imagenet64", device="cpu")
    cfg = study.config_from_profile(profile, model="resnet50", method="snip",
                                    sparsity=0.9, material=Material(per_class=1))
    train, _ = study.run_data(cfg.dataset, 0, 0)
    model = study.initial_model(cfg, train.num_classes)
    assert type(model).__name__ == "ResNet" and model.fc.out_features == 3
    assert sum(p.numel() for p in model.parameters()) > 23_000_000
    mask = study.make_mask(cfg, model, train)
    found = masks.diagnostics(mask, models.stages(model, train.images.shape[1]))
    assert found["density"] == pytest.approx(0.1, abs=1e-3)
    assert len(mask) == 54  # 53 convolutions and the linear layer


def test_imagenet_runs_name_torchvisions_resnet50_for_concepts():
    classifier, ace = concepts.default_discovery("imagenet")
    assert classifier == "torchvision:resnet50:IMAGENET1K_V1@layer4.1"
    assert ace == concepts.ACESettings.for_image_size(224)
    assert Material("dop").for_dataset("imagenet64").ace == concepts.ACESettings()
