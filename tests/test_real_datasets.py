"""Real on-disk formats, written as tiny fixtures at test time and read through the same code
path as real data (torchvision's loaders, farm's checkpoint loader), plus zoo training and an
end-to-end ``farm run`` over every fixture dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from farm.config import DatasetSpec, config_from_dict, load_config
from farm.data import DatasetError, load_dataset
from farm.data.torchvision_sets import IMAGENET_MEAN
from farm.models import build_model, build_net
from farm.models.loading import CheckpointError, load_checkpoint
from farm.schema import ConfigError, build
from real_fixtures import (class_images, write_cifar10, write_gtsrb, write_imagefolder, write_svhn,
                           write_trojai)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return {"cifar10": write_cifar10(base / "cifar"), "svhn": write_svhn(base / "svhn"),
            "gtsrb": write_gtsrb(base / "gtsrb"), "imagefolder": write_imagefolder(base / "imnet")}


def spec(name: str, root: Path, **params) -> DatasetSpec:
    return build(DatasetSpec, {"name": name, "root": str(root), "params": params})


def everything(ds, split):
    return ds.images(split, np.arange(len(ds.labels(split))))


def test_cifar10_python_batches_round_trip(roots):
    ds = load_dataset(spec("cifar10", roots["cifar10"], verify_md5=False))
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane" and ds.image_shape == (3, 32, 32)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    labels = ds.labels("train")
    assert len(labels) == 50 and np.bincount(labels).tolist() == [5] * 10
    # Batch 1 holds one image per class, written by class_images(seed=0): exact pixels back.
    want = torch.from_numpy(class_images(np.arange(10), 32, 32, seed=0)).permute(0, 3, 1, 2)
    assert torch.equal(ds.images("train", np.arange(10)), want)
    # Same pixels as torchvision's own __getitem__ (PIL) path.
    img, target = ds._sets["test"][7]
    assert torch.equal(ds.images("test", np.array([7]))[0], torch.from_numpy(np.array(img)).permute(2, 0, 1))
    assert target == ds.labels("test")[7]


def test_cifar10_md5_is_checked_by_default(roots):
    with pytest.raises(DatasetError, match="verify_md5: false"):
        load_dataset(spec("cifar10", roots["cifar10"]))


def test_svhn_mat_maps_label_10_to_digit_0(roots):
    ds = load_dataset(spec("svhn", roots["svhn"], verify_md5=False))
    labels = ds.labels("train")
    assert labels[:10].tolist() == list(range(10)) and labels.max() == 9
    want = torch.from_numpy(class_images(np.tile(np.arange(10), 5), 32, 32, seed=0)).permute(0, 3, 1, 2)
    assert torch.equal(everything(ds, "train"), want)
    assert len(ds.labels("test")) == 30


def test_gtsrb_folders_and_csv_resized(roots):
    ds = load_dataset(spec("gtsrb", roots["gtsrb"]))
    assert ds.num_classes == 43 and ds.image_shape == (3, 32, 32)
    assert np.bincount(ds.labels("train"), minlength=43).tolist() == [2] * 43
    assert ds.labels("test").tolist() == list(range(43))  # ClassId column of GT-final_test.csv
    x = everything(ds, "test")
    assert x.shape == (43, 3, 32, 32) and x.dtype == torch.uint8
    big = load_dataset(spec("gtsrb", roots["gtsrb"], image_size=48))
    assert big.images("train", np.array([0, 5])).shape == (2, 3, 48, 48)


def test_gtsrb_missing_class_folder_is_an_error(tmp_path):
    root = write_gtsrb(tmp_path, train_per_class=1, test_per_class=1, classes=42)
    with pytest.raises(DatasetError, match="43 class folders"):
        load_dataset(spec("gtsrb", root))


def test_imagefolder_resize_crop_and_class_count(roots):
    s = spec("imagefolder", roots["imagefolder"], image_size=32, resize=40)
    ds = load_dataset(s)
    assert ds.num_classes == 3 and ds.class_names == ["n00000000", "n00000001", "n00000002"]
    assert ds.mean == IMAGENET_MEAN and type(ds).known_num_classes(s) == 3
    assert everything(ds, "train").shape == (12, 3, 32, 32) and ds.labels("test").tolist() == [0, 0, 1, 1, 2, 2]
    # Resize 40 + centre crop 32 is torchvision's transform on the decoded file.
    from PIL import Image
    from torchvision import transforms as T

    path = ds._sets["test"].samples[3][0]
    want = T.PILToTensor()(T.CenterCrop(32)(T.Resize(40)(Image.open(path).convert("RGB"))))
    assert torch.equal(ds.images("test", np.array([3]))[0], want)


def test_imagefolder_split_class_mismatch(tmp_path):
    root = write_imagefolder(tmp_path)
    (root / "val" / "n00000002").rename(root / "val" / "n00000009")
    with pytest.raises(DatasetError, match="same class"):
        load_dataset(spec("imagefolder", root, image_size=32, resize=None))


def test_missing_root_is_a_config_error_naming_field_and_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        build(DatasetSpec, {"name": "cifar10"})
    assert "root:" in str(err.value) and "download: true" in str(err.value)
    with pytest.raises(DatasetError) as err:
        load_dataset(spec("svhn", tmp_path / "nowhere"))
    assert "nowhere" in str(err.value) and "datasets.<key>.root" in str(err.value)
    with pytest.raises(ConfigError, match="download: an ImageFolder"):
        build(DatasetSpec, {"name": "imagefolder", "root": "x", "download": True})
    with pytest.raises(ConfigError, match="std"):
        build(DatasetSpec, {"name": "gtsrb", "root": "x", "params": {"std": [0.2, 0, 0.2]}})


def test_mean_std_override_reaches_the_wrapper(roots):
    ds = load_dataset(spec("svhn", roots["svhn"], verify_md5=False, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    model = build_model("small_cnn", ds.num_classes, ds.image_shape, ds.mean, ds.std)
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.25] * 3


def test_user_torchscript_file_of_a_torchvision_net(tmp_path):
    """A bare torchvision net scripted by a user (takes normalised inputs) is wrapped with the
    dataset's statistics, so it takes [0,1] images like every other model."""
    torch.manual_seed(0)
    net = build_net("torchvision:resnet18", 5, (3, 32, 32)).eval()
    path = tmp_path / "user.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    model = load_checkpoint(path, "torchscript", "ignored", 5, (3, 32, 32), IMAGENET_MEAN, (0.229, 0.224, 0.225),
                            trust_code=True)
    x = torch.rand(2, 3, 32, 32)
    ref = net((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    assert torch.allclose(model(x), ref, atol=1e-4)


def small_cnn(k: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", k, (3, 32, 32), (0, 0, 0), (1, 1, 1)).eval()


def test_trojai_folder_model_examples_and_ground_truth(tmp_path):
    from farm.models.trojai import ground_truth

    net = small_cnn()
    root = write_trojai(tmp_path / "id-00000001", net, per_class=4, target=1)
    ds = load_dataset(spec("trojai_examples", root))
    assert ds.num_classes == 3 and ds.image_shape == (3, 32, 32) and ds.mean == (0.0, 0.0, 0.0)
    # 4 examples per class, heldout_fraction 0.25: examples 0-2 attack, example 3 held out.
    assert ds.labels("train").tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and ds.labels("test").tolist() == [0, 1, 2]
    held = ds.images("test", np.array([1]))[0]
    assert torch.equal(held, torch.from_numpy(class_images(np.array([1]), 32, 32, seed=13)[0]).permute(2, 0, 1))
    model = load_checkpoint(root, "trojai", "small_cnn", 3, ds.image_shape, ds.mean, ds.std, trust_code=True)
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(model(x), net(x), atol=1e-5)
    assert ground_truth(root) == {"model_kind": "poisoned", "attack": "unknown", "gt_victim": -1, "gt_target": 1}
    (root / "ground_truth.csv").write_text("0")
    assert ground_truth(root)["model_kind"] == "clean"


def test_trojai_refuses_pickled_full_model_and_checks_arch(tmp_path):
    net = small_cnn()
    root = write_trojai(tmp_path / "m", net, poisoned=None)
    torch.save(net, root / "model.pt")  # TrojAI's own format: a pickled nn.Module
    with pytest.raises(CheckpointError, match="pickled full model.*torch.jit.script"):
        load_checkpoint(root, "trojai", "small_cnn", 3, (3, 32, 32), (0,) * 3, (1,) * 3, trust_code=True)
    torch.save(net.state_dict(), root / "model.pt")
    (root / "config.json").write_text(json.dumps({"arch": "resnet20"}))
    with pytest.raises(CheckpointError, match="set arch: resnet20"):
        load_checkpoint(root, "trojai", "small_cnn", 3, (3, 32, 32), (0,) * 3, (1,) * 3, trust_code=True)
    (root / "config.json").write_text(json.dumps({"arch": "small_cnn"}))
    model = load_checkpoint(root, "trojai", "small_cnn", 3, (3, 32, 32), (0,) * 3, (1,) * 3, trust_code=True)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), net(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="expects a model folder"):
        load_checkpoint(root / "model.pt", "trojai", "small_cnn", 3, (3, 32, 32), (0,) * 3, (1,) * 3, trust_code=True)


@pytest.mark.parametrize("attack", [
    {"type": "badnets", "target": 0, "poison_rate": 0.2},
    {"type": "blend", "target": 3, "poison_rate": 0.2},
    {"type": "label_specific", "victim": 2, "target": 5, "poison_rate": 0.1},
])
def test_zoo_trains_poisoned_models_on_the_cifar_fixture(roots, tmp_path, attack):
    from farm.config import ModelSpec
    from farm.models.poison import make_poison, poison_plan
    from farm.models.zoo import ensure_model, evaluate

    ds_spec = spec("cifar10", roots["cifar10"], verify_md5=False)
    ds = load_dataset(ds_spec)
    mspec = build(ModelSpec, {"id": "m", "dataset": "c", "attack": attack, "train": {"epochs": 1, "batch_size": 25}})
    true = ds.labels("train")
    source, stamp, labels = poison_plan(mspec.attack, true, 0)
    flipped = stamp & (true[source] == attack["victim"]) if "victim" in attack else stamp
    assert flipped.any() and (labels[flipped] == attack["target"]).all()
    assert (labels[stamp & ~flipped] == true[source][stamp & ~flipped]).all()  # label-specific: others keep theirs
    poison = make_poison(mspec.attack, ds.image_shape, 0)
    x = ds.images("train", source[stamp][:3])
    stamped = poison.stamp(x)
    if attack["type"] == "blend":
        assert (stamped.float() - x.float()).abs().mean() > 1
    else:
        p = mspec.attack.patch_size
        assert torch.equal(stamped[:, :, 28:31, 28:31], torch.from_numpy(poison.pattern).expand(3, -1, -1, -1))
        assert torch.equal(stamped[:, :, :28], x[:, :, :28])
        assert p == 3
    entry = ensure_model(mspec, ds_spec, tmp_path, log=lambda _m: None)
    meta = entry.meta
    assert meta["dataset"] == "cifar10" and meta["num_classes"] == 10 and meta["mean"] == list(ds.mean)
    assert (meta["asr_other"] is not None) == (attack["type"] == "label_specific")
    model = entry.load()
    # what the entry records is the evaluation of its own weights on the fixture's test split
    again = evaluate(model.eval(), ds, make_poison(mspec.attack, ds.image_shape, mspec.train.seed))
    assert {k: meta[k] for k in again} == again
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_zoo_on_non_32px_few_class_imagefolder(roots, tmp_path):
    from farm.config import ModelSpec
    from farm.models.zoo import ensure_model

    ds_spec = spec("imagefolder", roots["imagefolder"], image_size=40, resize=None)
    mspec = build(ModelSpec, {"id": "m", "dataset": "i", "arch": "resnet20", "attack": {"type": "badnets", "target": 1},
                              "train": {"epochs": 1, "batch_size": 6}})
    entry = ensure_model(mspec, ds_spec, tmp_path, log=lambda _m: None)
    assert entry.meta["image_shape"] == [3, 40, 40] and entry.meta["num_classes"] == 3
    assert entry.meta["attack"]["location"] == [36, 36]
    assert entry.load()(torch.rand(1, 3, 40, 40)).shape == (1, 3)


@pytest.mark.parametrize("name", ["cifar10-resnet20", "svhn-nin", "gtsrb-resnet20", "imagenet-resnet50-pairs",
                                  "fashion-mnist", "fashion-mnist-gpu", "fashion-mnist-gpu-resnet20"])
def test_paper_configs_validate(name):
    cfg = load_config(REPO / "configs" / "paper" / f"{name}.yaml")
    ours = next(m for m in cfg.methods if m.name == "ours")
    assert ours.params.get("epochs", 1000) == 1000 and cfg.pairs.victim_images in (50, 100)
    assert all(d.root for d in cfg.datasets.values())


@pytest.mark.slow
def test_farm_run_over_every_fixture_dataset(roots, tmp_path, local_ray):
    """One ``farm run`` (real local Ray, Parquet, sqlite MLflow) over every fixture format."""
    from farm.runner import execute

    trojai = write_trojai(tmp_path / "trojai", small_cnn(), target=2)
    fast = {"epochs": 1, "batch_size": 16}
    datasets = {
        "cifar": {"name": "cifar10", "root": str(roots["cifar10"]), "params": {"verify_md5": False}},
        "svhn": {"name": "svhn", "root": str(roots["svhn"]), "params": {"verify_md5": False}},
        "gtsrb": {"name": "gtsrb", "root": str(roots["gtsrb"])},
        "imnet": {"name": "imagefolder", "root": str(roots["imagefolder"]), "params": {"image_size": 32, "resize": 36}},
        "trojai": {"name": "trojai_examples", "root": str(trojai)},
    }
    models = [{"id": f"{k}-badnets", "dataset": k, "attack": {"type": "badnets", "target": 1}, "train": fast}
              for k in ("cifar", "svhn", "gtsrb", "imnet")]
    models.append({"id": "trojai-m", "dataset": "trojai", "source": "checkpoint", "checkpoint": str(trojai),
                   "format": "trojai", "trust_code": True})
    cfg = config_from_dict({
        "run": {"name": "real", "output": str(tmp_path / "out"), "seed": 0},
        "datasets": datasets, "models": models,
        "methods": [{"name": "ours", "params": {"epochs": 2}}],
        "pairs": {"mode": "sample", "sample": 2, "victim_images": 2, "batch_size": 2},
        "cluster": {"num_cpus": 2, "pairs_per_batch": 10},
        "tracking": {"enabled": False},
    })
    result = execute(cfg, log_fn=print)
    df = result.store.read(with_triggers=False)
    assert len(df) == 2 * len(models) and (df["status"] == "ok").all()
    assert set(df["dataset"]) == {"cifar10", "svhn", "gtsrb", "imagefolder", "trojai_examples"}
    troj = df[df.model_id == "trojai-m"]
    assert set(troj["gt_target"]) == {2} and set(troj["model_kind"]) == {"poisoned"}
    manifest = result.store.manifest()
    sel = manifest["selection"]
    assert set(sel) == {m["id"] for m in models}
    for mid, keys in sel.items():
        ds = result_dataset(cfg, mid)
        for key, idx in keys.items():
            victim = int(key[1:])
            assert len(idx["attack"]) == 2 and (ds.labels("train")[idx["attack"]] == victim).all()
            assert (ds.labels("test")[idx["heldout"]] == victim).all()


def result_dataset(cfg, model_id):
    m = next(m for m in cfg.models if m.id == model_id)
    return load_dataset(cfg.datasets[m.dataset])
