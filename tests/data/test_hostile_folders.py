"""Hostile image folders: symlink loops and names that are not valid UTF-8 are refused with one line
naming the path (exit 2, no output folder left behind); symlinked image files keep working."""

import os
import shutil
import sys

import pytest

from zipfast.cli import main
from zipfast.data.imagefolder import DatasetError, FewShotImageFolder

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="bytes file names and symlinks as on Linux")

CLI = ["--model", "zipfast-tiny224", "--pretrained", "none", "--budget", "10", "--shots", "2",
       "--device", "cpu", "--no-progress"]


@pytest.fixture
def root(tiny_image_folder, tmp_path):
    return shutil.copytree(tiny_image_folder, tmp_path / "data")


def _refused(root, tmp_path, capsys, *match):
    with pytest.raises(DatasetError) as info:
        FewShotImageFolder.from_root(root, shots=2, seed=1)
    out = tmp_path / "out"
    assert main(["train", "--data", str(root), "--output-dir", str(out), *CLI]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("zipfast train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for m in match:
        assert m in str(info.value) and m in lines[0], (m, lines[0])
    assert not out.exists()  # a refused run leaves no output folder
    return lines[0]


def test_class_folder_linking_to_itself(root, tmp_path, capsys):
    os.symlink("loop", root / "loop")
    _refused(root, tmp_path, capsys, f"'{root / 'loop'}'", "symbolic link that loops", "remove the link")


def test_class_folder_linking_to_the_dataset_folder(root, tmp_path, capsys):
    os.symlink(".", root / "again")  # a "class" that is the folder of classes itself
    _refused(root, tmp_path, capsys, f"'{root / 'again'}'", "loops")


def test_image_linking_to_itself(root, tmp_path, capsys):
    os.symlink("x.png", root / "forest" / "x.png")
    _refused(root, tmp_path, capsys, f"'{root / 'forest' / 'x.png'}'", "loops", "remove the link")


def test_link_to_the_parent_inside_a_class_is_not_followed(root):
    """The scan reads one level of each class folder and never descends: a link to the parent
    (without an image extension, or a directory with one) is ignored like any other non-image entry."""
    os.symlink("..", root / "forest" / "up")
    os.symlink("..", root / "forest" / "up.png")
    ds = FewShotImageFolder.from_root(root, shots=2, seed=1)
    assert ds.folders == ["annual_crop", "forest", "sea_lake"]
    assert not any("up" in os.path.basename(p) for p, _ in ds.train + ds.test)


def test_symlinked_image_files_and_class_folders_still_work(root, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(str(root / "sea_lake"), outside)
    os.symlink(outside, root / "sea_lake")  # a class folder kept elsewhere
    os.symlink(root / "forest" / "forest_0.png", root / "annual_crop" / "linked.png")  # an image linked in
    ds = FewShotImageFolder.from_root(root, shots=2, seed=1)
    paths = [p for p, _ in ds.train + ds.test]
    assert str(root / "annual_crop" / "linked.png") in paths
    assert sum(label == 2 for _, label in ds.train + ds.test) == 6


def test_class_folder_name_not_utf8(root, tmp_path, capsys):
    bad = os.fsencode(root) + b"/\xff\xfe"
    os.mkdir(bad)
    for i in range(3):
        shutil.copy(root / "forest" / f"forest_{i}.png", bad + f"/{i}.png".encode())
    line = _refused(root, tmp_path, capsys, "class folder", r"\xff\xfe", "not valid UTF-8", "rename")
    line.encode("utf-8")  # the message itself prints anywhere


def test_image_name_not_utf8(root, tmp_path, capsys):
    shutil.copy(root / "forest" / "forest_0.png", os.fsencode(root) + b"/forest/\xe9t\xe9.png")
    _refused(root, tmp_path, capsys, "image file", r"\xe9t\xe9.png", "not valid UTF-8", "rename")
