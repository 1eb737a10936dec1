"""Training data (Section IV): on-the-fly bicubic LR, determinism, augmentation, bad inputs, video clips."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgbp import data
from mgbp.errors import ConfigError, ImageReadError
from mgbp.resize import imresize_uint8, modcrop

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def write_png(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish content so the bicubic LR is not dominated by rounding
    base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
    arr = np.array(Image.fromarray(base).resize((w, h), Image.BILINEAR))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def folder(tmp_path):
    images = [write_png(tmp_path / "hr" / f"im{i}.png", 37 + 5 * i, 41 + 3 * i, i) for i in range(3)]
    return tmp_path / "hr", images


def sample_pair(ds, n, scale):
    batch = {k: v[None] for k, v in ds[n].items()}
    return data.make_training_pair(batch, scale, ds.margin)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_on_the_fly_lr_equals_crop_of_whole_image_lr(folder, scale):
    """The margin + symmetric reflection make a patch's LR exactly the whole image's MATLAB LR, cropped."""
    path, images = folder
    ds = data.ImagePatchDataset(path, scale, patch=6, augment=False)
    by_name = {p.name: img for p, img in zip(ds.paths, images)}
    for n in range(12):
        i, rng = ds.indexer(n)  # the same generator __getitem__ draws the crop position from
        hr_img = modcrop(by_name[ds.paths[i].name], scale)
        lr_img = imresize_uint8(hr_img, 1.0 / scale)
        lr_h, lr_w = lr_img.shape[:2]
        y = int(rng.integers(0, lr_h - 6 + 1))
        x = int(rng.integers(0, lr_w - 6 + 1))
        lr, hr = sample_pair(ds, n, scale)
        expected_lr = torch.from_numpy(lr_img[y: y + 6, x: x + 6]).permute(2, 0, 1).float() / 255
        expected_hr = torch.from_numpy(np.array(hr_img[y * scale: (y + 6) * scale, x * scale: (x + 6) * scale]))
        assert torch.equal(hr[0], expected_hr.permute(2, 0, 1).float() / 255)
        assert torch.allclose(lr[0], expected_lr, atol=1.01 / 255)  # float32 vs float64 rounding ties
        assert (lr[0] - expected_lr).abs().mean() < 0.02 / 255


def test_samples_are_deterministic_and_augmentation_is_a_dihedral_transform(folder):
    path, _ = folder
    plain = data.ImagePatchDataset(path, 2, patch=5, augment=False, seed=3)
    aug = data.ImagePatchDataset(path, 2, patch=5, augment=True, seed=3)
    again = data.ImagePatchDataset(path, 2, patch=5, augment=True, seed=3, cache=False)
    codes = set()
    for n in range(40):
        a, b, c = plain[n]["hr"], aug[n]["hr"], again[n]["hr"]
        assert torch.equal(b, c)  # cache or not, same sample for the same number
        _, rng = aug.indexer(n)
        rng.integers(0, 10**6), rng.integers(0, 10**6)
        code = int(rng.integers(0, 8))
        codes.add(code)
        expected = data.dihedral(a.permute(1, 2, 0).numpy(), code)
        assert torch.equal(b, torch.from_numpy(np.ascontiguousarray(expected)).permute(2, 0, 1))
    assert len(codes) == 8
    other_seed = data.ImagePatchDataset(path, 2, patch=5, seed=4)
    assert any(not torch.equal(other_seed[n]["hr"], aug[n]["hr"]) for n in range(5))


def test_every_image_is_used_once_per_epoch(folder):
    path, _ = folder
    ds = data.ImagePatchDataset(path, 2, patch=5)
    for epoch in range(3):
        assert sorted(ds.indexer(epoch * 3 + k)[0] for k in range(3)) == [0, 1, 2]


def test_ranks_share_the_global_batch():
    one = list(data.StepBatchSampler(5, 7, global_batch=4))
    two = [list(data.StepBatchSampler(5, 7, 4, rank=r, world=2)) for r in range(2)]
    assert one == [two[0][s] + two[1][s] for s in range(2)]
    assert one[0] == [20, 21, 22, 23]
    with pytest.raises(ConfigError):
        data.StepBatchSampler(0, 1, global_batch=3, world=2)


def test_dataloader_with_workers_gives_the_same_batches(folder):
    from torch.utils.data import DataLoader

    path, _ = folder
    ds = data.ImagePatchDataset(path, 2, patch=5)
    batches = []
    for workers in (0, 1):
        loader = DataLoader(ds, batch_sampler=data.StepBatchSampler(0, 3, 2), num_workers=workers,
                            worker_init_fn=data.seed_worker)
        batches.append([b["hr"] for b in loader])
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_paired_lr_folder(folder, tmp_path):
    path, _ = folder
    for p in sorted(path.iterdir()):
        hr = modcrop(np.array(Image.open(p)), 2)
        (tmp_path / "lr").mkdir(exist_ok=True)
        Image.fromarray(imresize_uint8(hr, 0.5)).save(tmp_path / "lr" / f"{p.stem}x2.png")
    paired = data.ImagePatchDataset(path, 2, patch=6, lr_folders=tmp_path / "lr")
    fly = data.ImagePatchDataset(path, 2, patch=6)
    for n in range(6):
        lr_p, hr_p = sample_pair(paired, n, 2)
        lr_f, hr_f = sample_pair(fly, n, 2)
        assert torch.equal(hr_p, hr_f)
        assert torch.allclose(lr_p, lr_f, atol=1.01 / 255)
    (tmp_path / "lr" / "im1x2.png").unlink()
    with pytest.raises(ImageReadError, match="im1"):
        data.ImagePatchDataset(path, 2, patch=6, lr_folders=tmp_path / "lr")
    assert len(data.ImagePatchDataset(path, 2, patch=6, lr_folders=tmp_path / "lr", skip_bad=True)) == 2


def test_bad_folders(tmp_path, folder):
    path, _ = folder
    with pytest.raises(ConfigError, match="not found"):
        data.ImagePatchDataset(tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        data.ImagePatchDataset(tmp_path / "empty", 2)
    (path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_png(path / "small.png", 10, 30, 9)
    with pytest.raises(ImageReadError) as err:
        data.ImagePatchDataset(path, 2, patch=8)
    assert "broken.png" in str(err.value) and "small.png" in str(err.value) and "2 bad" in str(err.value)
    ds = data.ImagePatchDataset(path, 2, patch=8, skip_bad=True)
    assert len(ds) == 3 and len(ds.skipped) == 2
    with pytest.raises(ImageReadError, match="broken.png"):
        data.ImagePatchDataset(path, 2, patch=8, cache=False)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="no usable"):
        data.ImagePatchDataset(only_bad, 2, skip_bad=True)


def test_video_clips_from_frame_folders(tmp_path):
    frames = [write_png(tmp_path / "seq" / f"{t:08d}.png", 30, 34, 10 + t) for t in range(6)]
    ds = data.VideoClipDataset(tmp_path, 2, patch=6, frames=4, augment=False)
    item = ds[0]["hr"]
    assert item.shape == (3, 4, (6 + 2 * data.MARGIN) * 2, (6 + 2 * data.MARGIN) * 2)
    lr, hr = data.make_training_pair({"hr": item[None]}, 2, ds.margin)
    assert lr.shape == (1, 3, 4, 6, 6) and hr.shape == (1, 3, 4, 12, 12)
    # the 4 frames are one and the same crop of 4 consecutive frames
    stack = np.stack(frames)
    hr_np = (hr[0] * 255).round().byte().permute(1, 2, 3, 0).numpy()
    matches = [(t, y, x) for t in range(3) for y in range(0, 30 - 11, 2) for x in range(0, 34 - 11, 2)
               if np.array_equal(stack[t:t + 4, y:y + 12, x:x + 12], hr_np)]
    assert len(matches) >= 1
    with pytest.raises(ImageReadError, match="fewer than 8"):
        data.VideoClipDataset(tmp_path, 2, patch=6, frames=8)


def test_panned_stills_move_by_a_constant_step(tmp_path):
    """Frame t of a panned clip is frame t-1 moved by (vy, vx) HR pixels; the middle frame is a plain crop."""
    image = write_png(tmp_path / "stills" / "a.png", 80, 90, 7)
    ds = data.PanningClipDataset(tmp_path / "stills", 4, patch=6, frames=5, pan=3, augment=False)
    side = (6 + 2 * data.MARGIN) * 4
    moves = set()
    for n in range(12):
        cube = ds[n]["hr"].permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
        assert cube.shape == (5, side, side, 3)
        middle = [(y, x) for y in range(0, 80 - side + 1, 4) for x in range(0, 90 - side + 1, 4)
                  if np.array_equal(image[y:y + side, x:x + side], cube[2])]
        if not middle:  # the crop touches a border: reflected, not found as a plain crop
            continue
        y, x = middle[0]
        found = None
        for vy in range(-3, 4):
            for vx in range(-3, 4):
                frames_at = [(y + (t - 2) * vy, x + (t - 2) * vx) for t in range(5)]
                inside = all(0 <= a and a + side <= 80 and 0 <= b and b + side <= 90 for a, b in frames_at)
                if inside and all(np.array_equal(image[a:a + side, b:b + side], cube[t])
                                  for t, (a, b) in enumerate(frames_at)):
                    found = (vy, vx)
        if found is not None:
            moves.add(found)
    assert len(moves) >= 3  # several different motions, each exactly a constant step per frame


def test_mixed_clips_draw_from_both_sources_deterministically(tmp_path):
    write_png(tmp_path / "stills" / "a.png", 60, 60, 1)
    frames = [write_png(tmp_path / "seq" / f"{t:08d}.png", 30, 34, 10 + t) for t in range(6)]
    videos = data.VideoClipDataset(tmp_path / "seq", 2, patch=6, frames=4)
    stills = data.PanningClipDataset(tmp_path / "stills", 2, patch=6, frames=4)
    mixed = data.MixedClipDataset(videos, stills, fraction=0.3, seed=5)
    picks = []
    for n in range(200):
        item = mixed[n]["hr"]
        assert torch.equal(item, mixed[n]["hr"])
        picks.append(torch.equal(item, stills[n]["hr"]))
    assert 0.2 < np.mean(picks) < 0.4 and frames
    with pytest.raises(ConfigError, match="stills_fraction"):
        data.MixedClipDataset(videos, stills, fraction=1.5)


def test_video_file_decoding():
    pytest.importorskip("av")
    video = SHARED / "data" / "video" / "bigbuckbunny.mp4"
    if not video.exists():
        pytest.skip(f"../shared is absent: no {video}")
    ds = data.VideoClipDataset(video, 4, patch=8, frames=3, max_frames=4)
    assert ds.clips[0].shape == (4, 720, 1280, 3)
    assert ds[0]["hr"].shape == (3, 3, 48, 48)


def test_validation_set_follows_the_protocol(folder):
    path, images = folder
    val = data.load_validation_set(path, 3, max_images=2)
    assert len(val) == 2
    _, lr, hr = val[0]
    hr_np = modcrop(images[0], 3)
    assert hr.shape == (1, 3, hr_np.shape[0], hr_np.shape[1])
    assert torch.equal((lr[0] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(imresize_uint8(hr_np, 1 / 3)))
