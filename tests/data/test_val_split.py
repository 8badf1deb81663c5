"""The few-shot validation split of every kind of task (issue 19: `zipfast sweep` selects on it):
the planted task's val after its test split (train and test unchanged), an image folder's val/ folder
or leftover training images, a paper dataset's Dassl val carried over, and `Trainer.val_accuracy()`
checked against predictions computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import paper_data
from zipfast import ZIPTrainer
from zipfast.config import TrainConfig
from zipfast.data.imagefolder import DatasetError, FewShotImageFolder
from zipfast.data.planted import make_planted_task, planted_model
from zipfast.data.sources import FeatureSource
from zipfast.data.transforms import views
from zipfast.datasets import build_dataset
from zipfast.engine.towers import TextTower
from zipfast.errors import UserError

# --------------------------------------------------------------------------- the planted task


@pytest.fixture(scope="module")
def planted():
    return planted_model(0)


def test_planted_val_has_min_shots_4_per_class_and_train_test_unchanged(planted):
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)
    # recorded from the code before val existed (commit c0eed57): train and test must not move
    assert task.train_features[0, :3].tolist() == [0.04485026374459267, 0.014630883932113647, -0.07070452719926834]
    assert task.test_features[-1, :3].tolist() == [-0.017376191914081573, -0.034581247717142105, -0.10463406890630722]
    assert float(task.train_features.double().sum()) == pytest.approx(-13.144363577566764, abs=1e-9)
    assert float(task.test_features.double().sum()) == pytest.approx(-10.497487388916852, abs=1e-9)
    C = len(task.classnames)
    assert task.val_features.shape == (C * 4, task.train_features.shape[1])
    assert task.val_labels.tolist() == torch.arange(C).repeat_interleave(4).tolist()
    assert torch.allclose(task.val_features.norm(dim=-1), torch.ones(C * 4))
    # new draws: no row repeats a train or test row
    assert not (torch.cdist(task.val_features, torch.cat([task.train_features, task.test_features])) < 1e-6).any()

    two = make_planted_task(TextTower(model), tok, n_ctx=4, shots=2, test_per_class=3, seed=1)
    assert two.train_features[0, :3].tolist() == [0.025173896923661232, -0.006516471970826387, -0.08226265758275986]
    assert two.test_features[-1, :3].tolist() == [0.07500488311052322, 0.015816856175661087, -0.01452992856502533]
    assert two.val_labels.tolist() == torch.arange(C).repeat_interleave(2).tolist()  # min(2, 4)


def _small_trainer(planted, task, classnames=None, **kw):
    model, tok = planted
    cfg = TrainConfig(model="zipfast-planted", pretrained="none", dataset="planted", n_ctx=4, intrinsic_dim=40,
                      rank=2, batch_size=16, budget=20, seed=3, checkpoint_every=0, **kw)
    return ZIPTrainer(model, classnames or task.classnames, cfg, task, tokenizer=tok, progress=False)


def _accuracy(pred, labels) -> float:
    return 100.0 * float((pred == labels).float().mean())


def test_planted_val_accuracy_by_hand(planted):
    model, tok = planted
    task = make_planted_task(TextTower(model), tok, n_ctx=4, shots=4, test_per_class=5, seed=0)
    tr = _small_trainer(planted, task)
    tr.fit()
    txt = F.normalize(tr.engine.text_features(tr.space.contexts(tr.w.unsqueeze(0)))[0].cpu(), dim=-1)
    by_hand = (task.val_features @ txt.T).argmax(-1)
    pred, labels = tr.test_predictions(split="val")
    assert torch.equal(pred, by_hand) and torch.equal(labels, task.val_labels)
    acc = tr.val_accuracy()
    assert acc == pytest.approx(_accuracy(by_hand, task.val_labels)) and 0 < acc < 100
    assert tr.evaluate(split="val") == tr.test_metrics(split="val")[0] == acc
    want_test = _accuracy((task.test_features @ txt.T).argmax(-1), task.test_labels)
    assert tr.evaluate() == tr.test_metrics()[0] == pytest.approx(want_test)  # the default is still test
    with pytest.raises(ValueError, match="split 'train'"):
        tr.evaluate(split="train")


def test_a_feature_source_without_val_is_one_line_user_error(planted):
    task = make_planted_task(TextTower(planted[0]), planted[1], n_ctx=4, shots=4, test_per_class=5, seed=0)
    data = FeatureSource(task.train_features, task.train_labels, task.test_features, task.test_labels)
    tr = _small_trainer(planted, data, task.classnames, method="zsclip")
    tr.evaluate()
    with pytest.raises(UserError) as e:
        tr.val_accuracy()
    assert "no validation split" in str(e.value) and "\n" not in str(e.value)
    with_val = FeatureSource(task.train_features, task.train_labels, task.test_features, task.test_labels,
                             task.val_features, task.val_labels)
    assert torch.equal(with_val.val_set()[1], task.val_labels)


# --------------------------------------------------------------------------- image folders


def _write(root: Path, classes=("cat", "dog"), n=10) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"img_{i:02d}.png")
    return root


def _by_class(items, label):
    return [Path(p).name for p, y in items if y == label]


@pytest.fixture(scope="module")
def layout_a(tmp_path_factory):
    root = tmp_path_factory.mktemp("a")
    _write(root / "train")
    _write(root / "test", n=3)
    return root


def test_folder_val_from_the_training_images_the_shots_leave(layout_a):
    ds = FewShotImageFolder.from_root(layout_a, shots=3, seed=5)
    # recorded from the code before val existed (commit c0eed57): the shots must not move
    assert _by_class(ds.train, 0) == ["img_01.png", "img_03.png", "img_08.png"]
    assert _by_class(ds.train, 1) == ["img_00.png", "img_06.png", "img_07.png"]
    assert _by_class(ds.test, 0) == ["img_00.png", "img_01.png", "img_02.png"]
    assert _by_class(ds.val, 0) == ["img_04.png", "img_05.png", "img_09.png"]  # min(3, 4) per class
    assert _by_class(ds.val, 1) == ["img_04.png", "img_05.png", "img_08.png"]
    assert all(Path(p).parent.parent.name == "train" for p, _ in ds.val)
    assert not set(ds.val) & set(ds.train)
    again = FewShotImageFolder.from_root(layout_a, shots=3, seed=5)
    assert again.val == ds.val and again.train == ds.train
    other = FewShotImageFolder.from_root(layout_a, shots=3, seed=6)
    assert other.val != ds.val and not set(other.val) & set(other.train)
    big = FewShotImageFolder.from_root(layout_a, shots=8, seed=2)  # 2 left per class: all of them
    assert _by_class(big.val, 0) == ["img_02.png", "img_03.png"]
    assert _by_class(big.val, 1) == ["img_00.png", "img_01.png"]
    assert len(FewShotImageFolder.from_root(layout_a, shots=1, seed=5).val) == 2  # min(1, 4) per class
    assert FewShotImageFolder.from_root(layout_a, shots=0, seed=5).val == []  # every image a shot


def test_folder_val_folder_is_used(tmp_path, layout_a):
    import shutil

    root = tmp_path / "withval"
    shutil.copytree(layout_a, root)
    _write(root / "val", n=6)
    ds = FewShotImageFolder.from_root(root, shots=8, seed=2)
    assert all(Path(p).parent.parent.name == "val" for p, _ in ds.val)
    assert [len(_by_class(ds.val, k)) for k in (0, 1)] == [4, 4]  # min(8, 4) of the 6
    same = FewShotImageFolder.from_root(layout_a, shots=8, seed=2)
    assert [(Path(p).relative_to(root), y) for p, y in ds.train] == [(Path(p).relative_to(layout_a), y)
                                                                   for p, y in same.train]
    assert FewShotImageFolder.from_root(root, shots=8, seed=2).val == ds.val
    assert len(FewShotImageFolder.from_root(root, shots=0, seed=2).val) == 12  # shots 0: all of val/
    shutil.rmtree(root / "val" / "dog")
    with pytest.raises(DatasetError, match=r"train and val splits differ .*only in .*train'?: dog"):
        FewShotImageFolder.from_root(root, shots=2, seed=2)


def test_folder_without_test_split_keeps_val_apart_from_test(tmp_path):
    root = _write(tmp_path / "b")
    full = FewShotImageFolder.from_root(root, shots=3, seed=5)  # the rest of each class is the test split
    assert full.val == [] and len(full.test) == 14
    capped = FewShotImageFolder.from_root(root, shots=3, seed=5, test_per_class=4)
    assert capped.train == full.train
    assert _by_class(capped.test, 0) == ["img_04.png", "img_06.png", "img_07.png", "img_09.png"]
    assert _by_class(capped.val, 0) == ["img_00.png", "img_02.png", "img_05.png"]
    assert not set(capped.val) & (set(capped.train) | set(capped.test))
    tight = FewShotImageFolder.from_root(root, shots=3, seed=5, test_per_class=6)  # one left per class
    assert [len(_by_class(tight.val, k)) for k in (0, 1)] == [1, 1]


# --------------------------------------------------------------------------- paper datasets


def test_paper_dataset_val_is_carried_over(tmp_path):
    paper_data.eurosat(tmp_path)
    ds = build_dataset("eurosat", tmp_path, shots=2, seed=1, write_cache=False)
    folder = ds.to_image_folder(test_per_class=1)
    assert folder.val == [(d.impath, d.label) for d in ds.val] and len(folder.val) == 2 * len(ds.classnames)
    assert not set(folder.val) & (set(folder.train) | set(folder.test))

    paper_data.imagenet(tmp_path)
    inet = build_dataset("imagenet", tmp_path, shots=2, seed=1, write_cache=False)
    assert inet.val is inet.test and inet.to_image_folder().val == []  # its official val is its test split


# --------------------------------------------------------------------------- the generated image task


@pytest.fixture
def synthetic(zipfast_cache):
    from zipfast.data import synthetic

    model, tok = synthetic.model()
    return model, tok, synthetic.folder()


def _image_trainer(synthetic, method="zip", test_per_class=2, **opts):
    model, tok, root = synthetic
    data = FewShotImageFolder.from_root(root, shots=2, seed=1, test_per_class=test_per_class)
    cfg = TrainConfig(model="zipfast-tiny224", pretrained="none", dataset="synthetic-images", method=method,
                      method_options=opts, shots=2, test_per_class=test_per_class, batch_size=4, budget=10, seed=1,
                      device="cpu", precision="fp32", n_ctx=4, intrinsic_dim=40, rank=2, checkpoint_every=0)
    return ZIPTrainer(model, data.classnames, cfg, data, tokenizer=tok, progress=False), data


def _val_views(tr, data):
    c = tr.config
    return views([p for p, _ in data.val], False, c.image_size, c.pixel_mean, c.pixel_std,
                 interpolation=c.interpolation, choices=c.transforms)


def _moved(w: torch.Tensor) -> torch.Tensor:
    """A point away from the start (seeded): the tiny random model's start predicts almost one class."""
    return w + 3 * (w.abs().mean() + 1) * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))


def test_synthetic_images_val_accuracy_by_hand_text_side(synthetic):
    tr, data = _image_trainer(synthetic)
    assert len(data.val) == 4 * 2  # 4 classes × min(2 shots, 4), none of them a train or test image
    assert not set(data.val) & (set(data.train) | set(data.test))
    w = _moved(tr.w)
    with torch.no_grad():
        feats = F.normalize(tr.model.encode_image(_val_views(tr, data)).float(), dim=-1)
    txt = F.normalize(tr.engine.text_features(tr.space.contexts(w.unsqueeze(0)))[0].cpu(), dim=-1)
    by_hand, labels = (feats @ txt.T).argmax(-1), torch.tensor([y for _, y in data.val])
    pred, got = tr.test_predictions(w, split="val")
    assert torch.equal(pred.cpu(), by_hand) and torch.equal(got.cpu(), labels)
    acc = tr.val_accuracy(w)
    assert acc == pytest.approx(_accuracy(by_hand, labels)) and 0 < acc < 100  # measured 50 %


def test_synthetic_images_val_accuracy_by_hand_image_side(synthetic):
    from zipfast.engine.image import image_logits

    tr, data = _image_trainer(synthetic, method="bar", q=1)
    ev, w = tr.evaluator, _moved(tr.w)
    with torch.no_grad():
        logits = image_logits(ev.engine.features(tr.space, w.unsqueeze(0), _val_views(tr, data)), ev.text_features,
                              tr.model.logit_scale.detach())
    by_hand, labels = logits[0].argmax(-1).cpu(), torch.tensor([y for _, y in data.val])
    pred, got = tr.test_predictions(w, split="val")
    assert torch.equal(pred.cpu(), by_hand) and torch.equal(got.cpu(), labels)
    assert len(set(by_hand.tolist())) > 1  # not one class for every image
    assert tr.val_accuracy(w) == pytest.approx(_accuracy(by_hand, labels))


@pytest.mark.parametrize("method,opts", [("zip", {}), ("bar", {"q": 1})])
def test_an_empty_val_is_one_line_user_error(synthetic, method, opts):
    tr, data = _image_trainer(synthetic, method=method, test_per_class=None, **opts)  # the rest is all test
    assert data.val == []
    with pytest.raises(UserError) as e:
        tr.val_accuracy()
    msg = str(e.value)
    assert msg.startswith("the dataset gives no validation images") and "\n" not in msg
    assert "val/" in msg and "--test-per-class" in msg
