"""The command line: train, then edit / sample / evaluate from the checkpoint; README and CI agree."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tiny

ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def _run(workdir, *args, **overrides):
    cmd = [sys.executable, "-m", "latent_jax.main"] + tiny.flags(workdir, **overrides) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    res = _run(workdir, num_steps=6)
    assert res.returncode == 0, res.stderr[-4000:]
    return workdir


def test_train_writes_metrics_grids_checkpoint_and_config(trained):
    assert os.path.isfile(os.path.join(trained, "config.json"))
    assert "6" in os.listdir(os.path.join(trained, "checkpoints"))
    with open(os.path.join(trained, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all("loss/reconstruction_l1" in r for r in rows)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(trained))
    pngs = os.listdir(os.path.join(trained, "images"))
    for kind in ("reconstructions", "edits", "samples"):
        assert any(p.startswith(kind) for p in pngs), (kind, pngs)


def test_edit_mode_writes_edited_images(trained, tmp_path):
    from latent_jax.data import synthetic_faces

    files = []
    for i, size in enumerate((40, 64)):   # any size: cropped to a square and resized
        img, _ = synthetic_faces.render(0, "test", i, size)
        path = tmp_path / f"face{i}.png"
        Image.fromarray(img).save(path)
        files.append(str(path))
    out = tmp_path / "out"
    res = _run(trained, "--mode=edit", "--images=" + ",".join(files),
               "--attributes=+Eyeglasses", "--strength=5", f"--output_dir={out}")
    assert res.returncode == 0, res.stderr[-4000:]
    edited = sorted(os.listdir(out))
    assert edited == ["000_face0_add_Eyeglasses.png", "000_face0_add_Eyeglasses_large.png",
                      "001_face1_add_Eyeglasses.png", "001_face1_add_Eyeglasses_large.png",
                      "grid_add_Eyeglasses.png"]
    assert np.asarray(Image.open(out / edited[0])).shape == (16, 16, 3)       # the model's size
    assert np.asarray(Image.open(out / edited[1])).shape == (256, 256, 3)     # upscaled copy
    grid = np.asarray(Image.open(out / "grid_add_Eyeglasses.png"))
    assert grid.shape[0] >= 3 * 96 and grid.shape[1] >= 2 * 96   # readable cells, with labels
    assert "40x40, resized to 16x16" in res.stdout and "64x64, resized to 16x16" in res.stdout


def test_edit_outputs_never_collide(trained, tmp_path):
    """Inputs with one name in two folders keep apart, a second call writes a new folder, and
    --paste_back puts the face back into the original frame."""
    for d, ext in (("a", "png"), ("b", "jpg")):
        (tmp_path / d).mkdir()
        frame = np.full((30, 50, 3), 128, np.uint8)
        Image.fromarray(frame).save(tmp_path / d / f"face.{ext}")
    images = f"--images={tmp_path}/a/face.png,{tmp_path}/b/face.jpg"
    first = _run(trained, "--mode=edit", images, "--attributes=-Eyeglasses", "--paste_back")
    second = _run(trained, "--mode=edit", images, "--attributes=-Eyeglasses")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:]
    calls = sorted(os.listdir(os.path.join(trained, "edits")))
    assert len(calls) >= 2
    newest = os.path.join(trained, "edits", calls[-2])
    names = sorted(os.listdir(newest))
    assert "000_face_remove_Eyeglasses.png" in names and "001_face_remove_Eyeglasses.png" in names
    framed = np.asarray(Image.open(os.path.join(newest, "000_face_remove_Eyeglasses_in_frame.png")))
    assert framed.shape == (30, 50, 3)
    assert (framed[:, :10] == 128).all()      # outside the centre square: the original
    assert "50x30, centre square 30x30 at (10, 0)" in first.stdout


def test_edit_mode_rejects_unknown_attribute_and_missing_files(trained, tmp_path):
    res = _run(trained, "--mode=edit", f"--images={tmp_path}/nothing*.png", "--attributes=+Eyeglasses")
    assert res.returncode == 1 and "--images" in res.stderr
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    res = _run(trained, "--mode=edit", f"--images={img}", "--attributes=+Smiling")
    assert res.returncode == 1 and "--attributes" in res.stderr and "Eyeglasses" in res.stderr


def test_sample_mode_writes_conditional_samples(trained, tmp_path):
    out = tmp_path / "samples"
    res = _run(trained, "--mode=sample", "--attributes=+Eyeglasses", "--num_samples=5",
               f"--output_dir={out}")
    assert res.returncode == 0, res.stderr[-4000:]
    files = [p for p in os.listdir(out) if p.startswith("with_Eyeglasses_")]
    assert len(files) == 5
    assert "accepted" in res.stdout and "yield" in res.stdout
    rejected = [int(p.split("_")[2][:3]) for p in files if "rejected" in p]
    grid = np.asarray(Image.open(out / "grid_with_Eyeglasses.png")).astype(int)
    red = (grid[..., 0] > 180) & (grid[..., 1] < 40) & (grid[..., 2] < 40)
    assert red.any() == bool(rejected)          # rejected samples are framed in red
    again = _run(trained, "--mode=sample", "--attributes=+Eyeglasses", "--num_samples=5",
                 "--seed=1", f"--output_dir={tmp_path / 'seed1'}")
    assert again.returncode == 0
    a = np.asarray(Image.open(out / sorted(files)[0]))
    b = np.asarray(Image.open(tmp_path / "seed1" / sorted(os.listdir(tmp_path / "seed1"))[1]))
    assert a.shape == b.shape and not np.array_equal(a, b)      # --seed changes the samples


def test_inpaint_mode_blanks_the_mask_and_pastes_the_decode(trained, tmp_path):
    from latent_jax.data import synthetic_faces

    img, _ = synthetic_faces.render(0, "test", 3, 16)
    Image.fromarray(img).save(tmp_path / "face.png")
    out = tmp_path / "out"
    res = _run(trained, "--mode=inpaint", f"--images={tmp_path / 'face.png'}", "--mask=bottom_half",
               f"--output_dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MSE inside the mask" in res.stdout
    filled = np.asarray(Image.open(out / "000_face_inpaint_bottom_half.png")).astype(int)
    assert np.abs(filled[:8] - img[:8].astype(int)).max() <= 1     # outside the mask: the input
    assert (out / "grid_inpaint_bottom_half.png").exists()


def test_bad_flags_fail_before_anything_is_restored(tmp_path):
    """On a workdir without a checkpoint, a bad --attributes or a mode the method cannot do is
    reported as such, not as the missing checkpoint: the flags are checked first."""
    empty = str(tmp_path / "empty")
    res = _run(empty, "--mode=sample", "--attributes=+Smiling")
    assert res.returncode == 1 and "--attributes" in res.stderr and "checkpoint" not in res.stderr
    res = _run(empty, "--mode=walk")
    assert res.returncode == 1 and "walk" in res.stderr and "checkpoint" not in res.stderr
    assert "Unable to initialize backend" not in res.stderr


def test_evaluate_mode_writes_a_report(trained, tmp_path):
    res = _run(trained, "--mode=evaluate", **{
        "eval.judge.steps": 30, "eval.judge.test_examples": 32, "eval.judge.width": 8,
        "eval.judge.cache_dir": str(tmp_path / "judges"), "eval.num_examples": 32,
        "eval.num_samples": 8})
    assert res.returncode == 0, res.stderr[-4000:]
    with open(os.path.join(trained, "eval", "latest.json")) as f:
        report = json.load(f)
    text = json.dumps(report)
    for key in ("edit_success", "edit_preservation", "frechet_judge_recon", "recon_l1",
                "edit_balanced_preservation", "judge_score", "intra_class_diversity",
                "inpaint_mse/eyes", "recon_loses"):
        assert key in text, key
    assert 1.0 <= report["headline"]["judge_score"] <= 2.0       # two classes of Eyeglasses
    assert os.path.isfile(os.path.join(trained, "eval", "report_6.md"))


def test_modes_without_a_checkpoint_fail_clearly(tmp_path):
    res = _run(str(tmp_path / "empty"), "--mode=evaluate")
    assert res.returncode == 1 and "no checkpoint" in res.stderr


def test_ci_runs_exactly_the_readme_test_command():
    root = tiny.REPO
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(root, ".ci", "run")) as f:
        ci_lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    command = ci_lines[-1]
    assert "pytest" in command
    assert "    " + command + "\n" in readme
