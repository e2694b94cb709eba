"""Image folders decoded in parallel, cached on disk, memory-mapped, and streamed to
training: each path gives exactly what the plain one-process, in-memory path gives."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import folder
from gankit.data.folder import decode_into, list_images, load_folder, load_image, parse_crop
from gankit.data.folder_cache import (
    IMAGES,
    MANIFEST,
    available_memory,
    cache_folder,
    fits_in_memory,
    is_memory_mapped,
    mapped_tensor,
)
from gankit.distributed import Ranks
from gankit.errors import UserError
from gankit.registry import load_dataset
from gankit.training.runner import Batches

SIZES = [(20, 30), (30, 20), (33, 33), (48, 24), (17, 40), (64, 50)]
CPU = torch.device("cpu")


def make_folder(root, n=30, seed=0):
    """n random images of several sizes and modes, PNG and JPEG, in two class folders,
    plus one file that is not an image under an image name, and one text file."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        w, h = SIZES[k % len(SIZES)]
        sub = root / ("cats" if k % 3 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w) if k % 4 == 0 else (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{k:02d}.{'png' if k % 2 else 'jpg'}")
    (root / "cats" / "broken.png").write_bytes(b"not a png at all")
    (root / "cats" / "notes.txt").write_text("ignored: not an image extension")
    return root


@pytest.fixture
def images(tmp_path):
    return make_folder(tmp_path / "images")


def load(root, cache_dir=None, log=None, progress=False, **kw):
    return load_folder(root, size=16, channels=3, log=log if log is not None else [].append, cache_dir=cache_dir,
                       progress=progress, **kw)


def same(a, b):
    assert a.images.shape == b.images.shape and torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)


def count_decodes(monkeypatch):
    calls = []
    real = folder.decode_into

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(folder, "decode_into", counted)
    return calls


def forbid_decoding(monkeypatch):
    def fail(*args, **kw):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder, "decode_into", fail)


def the_cache(cache_dir):
    (found,) = (cache_dir / "folders").iterdir()
    return found


@pytest.mark.parametrize("text, value", [("center", "center"), (" NONE ", "none"), ("108", 108), (140, 140)])
def test_parse_crop_reads_center_none_and_pixels(text, value):
    assert parse_crop(text) == value


@pytest.mark.parametrize("text", ["abc", "0", "-5", "1.5", "", "centre", "²", True])
def test_parse_crop_rejects_anything_else_in_one_line(text):
    with pytest.raises(UserError, match="is not center, none or a number of pixels") as info:
        parse_crop(text)
    assert "\n" not in str(info.value)


def test_parallel_decode_equals_one_process_and_the_plain_decode(images):
    paths = list_images(images)
    outputs = []
    for workers in (1, 2):
        target = np.zeros((len(paths), 3, 16, 16), np.uint8)
        kept = decode_into(target, paths, size=16, channels=3, workers=workers, progress=False)
        outputs.append((kept, target))
    (kept, one), (kept2, two) = outputs
    assert kept == kept2 and len(kept) == len(paths) - 1 and np.array_equal(one, two)
    plain = np.stack([load_image(paths[k], 16, 3) for k in kept]).transpose(0, 3, 1, 2)  # the old loader's way
    assert np.array_equal(one[:len(kept)], plain)
    warnings = []
    parallel, single = load(images, workers=2, log=warnings.append), load(images, workers=1)
    same(parallel, single)
    assert torch.equal(parallel.images, torch.from_numpy(plain))
    assert parallel.labels.tolist() == [0] * 20 + [1] * 10  # sorted paths: cats/ (label 0), then dogs/
    assert warnings == [f"warning: skipped 1 of 31 files under '{images}' that could not be read as images"]
    assert folder.worker_count(folder.PARALLEL_MIN_FILES - 1) == 1  # a few files: no worker processes


def test_progress_bar_shows_files_per_second_unless_off(images, capsys):
    load(images, progress=True)
    assert "files/s" in capsys.readouterr().err
    load(images)
    assert "files/s" not in capsys.readouterr().err


def test_cache_is_reused_with_identical_arrays_and_labels(images, tmp_path, monkeypatch):
    cache_dir, messages = tmp_path / "cache", []
    first = load(images, cache_dir, log=messages.append)
    same(first, load(images))
    assert messages[0].startswith("caching the decoded images of") and "skipped 1 of 31" in messages[1]
    found = the_cache(cache_dir)
    assert found == cache_folder(cache_dir, images.resolve(), size=16, channels=3, crop="center")
    assert sorted(p.name for p in found.iterdir()) == [IMAGES, MANIFEST]
    manifest = json.loads((found / MANIFEST).read_text())
    assert manifest["shape"] == [30, 3, 16, 16] and manifest["skipped"] == 1 and len(manifest["files"]) == 31
    assert manifest["root"] == str(images.resolve()) and manifest["labels"] == first.labels.tolist()
    assert np.array_equal(np.load(found / IMAGES), first.images.numpy())
    forbid_decoding(monkeypatch)
    messages.clear()
    again = load(images, cache_dir, log=messages.append)
    same(again, first)
    assert len(messages) == 1 and "skipped 1 of 31" in messages[0]  # the warning again, nothing rebuilt
    assert not is_memory_mapped(again.images) and again.images.numpy().flags.writeable  # fits: in memory


def change_folder(root, how):
    if how == "added":
        Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(root / "dogs" / "new.png")
    elif how == "removed":
        (root / "cats" / "01.png").unlink()
    elif how == "changed":  # other pixels, another size on disk, a later mtime
        path = root / "cats" / "01.png"
        before = path.stat()
        Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        assert path.stat().st_size != before.st_size
    elif how == "touched":  # the same bytes, a new mtime: cannot be told from an edit without decoding
        path = root / "cats" / "01.png"
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif how == "fixed":  # the unreadable file became an image
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "cats" / "broken.png")


@pytest.mark.parametrize("how, why", [("added", "added: 1"), ("removed", "removed: 1"), ("changed", "changed: 1"),
                                      ("touched", "changed: 1"), ("fixed", "changed: 1")])
def test_cache_is_rebuilt_when_the_folder_changes(images, tmp_path, monkeypatch, how, why):
    cache_dir = tmp_path / "cache"
    load(images, cache_dir)
    change_folder(images, how)
    calls, messages = count_decodes(monkeypatch), []
    rebuilt = load(images, cache_dir, log=messages.append)
    assert calls == [1] and messages[0].startswith("rebuilding the image cache") and why in messages[0]
    same(rebuilt, load(images))
    same(load(images, cache_dir), rebuilt)
    assert calls == [1, 1]  # the no-cache load above; the rebuilt cache itself was reused


def damage(found, how):
    npy, manifest = found / IMAGES, found / MANIFEST
    data = bytearray(npy.read_bytes())
    if how == "truncated":
        npy.write_bytes(data[:-100])
    elif how == "garbled header":
        npy.write_bytes(b"garbage!" + data[8:])
    elif how == "garbled pixels":
        data[-50:] = bytes(255 - b for b in data[-50:])
        npy.write_bytes(data)
    elif how == "array removed":
        npy.unlink()
    elif how == "manifest not JSON":
        manifest.write_text(manifest.read_text()[:-20])
    elif how == "manifest of another shape":
        fields = json.loads(manifest.read_text())
        fields["shape"][0] -= 1
        fields["labels"] = fields["labels"][1:]
        manifest.write_text(json.dumps(fields))
    elif how == "manifest without labels":
        fields = json.loads(manifest.read_text())
        del fields["labels"]
        manifest.write_text(json.dumps(fields))
    elif how == "manifest removed":
        manifest.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbled header", "garbled pixels", "array removed",
                                 "manifest not JSON", "manifest of another shape", "manifest without labels",
                                 "manifest removed"])
def test_damaged_cache_is_rebuilt_never_trusted(images, tmp_path, monkeypatch, how):
    cache_dir = tmp_path / "cache"
    first = load(images, cache_dir)
    first.images = first.images.clone()  # it maps the cache file, which the damage below changes in place
    damage(the_cache(cache_dir), how)
    calls, messages = count_decodes(monkeypatch), []
    same(load(images, cache_dir, log=messages.append), first)
    assert calls == [1]
    expected = "caching" if how == "manifest removed" else "rebuilding the image cache"
    assert messages[0].startswith(expected) and "\n" not in messages[0]
    same(load(images, cache_dir), first)
    assert calls == [1]  # the rebuilt cache is valid again


def test_crop_modes_give_their_sizes_and_pixels(tmp_path):
    root = tmp_path / "crops"
    root.mkdir()
    wide = np.zeros((30, 90, 3), np.uint8)  # left third red, middle green, right blue
    wide[:, :30, 0] = wide[:, 30:60, 1] = wide[:, 60:, 2] = 255
    Image.fromarray(wide).save(root / "wide.png")
    center, whole = load(root, crop="center"), load(root, crop="none")
    pixels = load(root, crop=20, cache_dir=tmp_path / "cache")
    for data in (center, whole, pixels):
        assert data.images.shape == (1, 3, 16, 16) and data.labels.tolist() == [-1]
    means = center.images[0].float().mean(dim=(1, 2))
    assert means[1] > 250 and means[0] < 5 and means[2] < 5  # the centre square: all green
    assert whole.images[0, 0, :, 0].float().mean() > 250 and whole.images[0, 2, :, -1].float().mean() > 250
    assert not torch.equal(center.images, whole.images)  # no crop: red on the left, blue on the right
    manual = Image.fromarray(wide).crop((35, 5, 55, 25)).resize((16, 16), Image.Resampling.BICUBIC)
    assert np.array_equal(pixels.images[0].permute(1, 2, 0).numpy(), np.asarray(manual))
    for workers in (1, 2):  # raised in a worker process too, and passed on as it is
        with pytest.raises(UserError, match=r"wide.png' is 90x30, smaller than --crop 40; use --crop center"):
            load(root, crop=40, workers=workers)
    load(root, crop="none", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "folders").iterdir())) == 2  # one cache per crop


def snapshot(root):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_cache_never_writes_inside_the_image_folder(images, tmp_path):
    before = snapshot(images)
    load(images, tmp_path / "cache")
    change_folder(images, "added")
    before = snapshot(images)
    load(images, tmp_path / "cache")  # a rebuild
    messages = []
    same(load(images, images / "cache", log=messages.append), load(images))  # a cache folder inside: not used
    assert snapshot(images) == before
    assert "inside the image folder" in messages[0]


def test_an_unwritable_cache_location_only_costs_time(images, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache folder would go")
    messages = []
    same(load(images, blocker / "cache", log=messages.append), load(images))
    assert any(m.startswith("warning: cannot write the image cache") for m in messages)
    # A read-only cache that is valid is still read (as root, chmod changes nothing, and it is still read).
    cache_dir = tmp_path / "cache"
    first = load(images, cache_dir)
    for path in (the_cache(cache_dir), the_cache(cache_dir).parent, cache_dir):
        path.chmod(0o555)
    try:
        with monkeypatch.context() as patch:
            forbid_decoding(patch)
            same(load(images, cache_dir), first)
        change_folder(images, "added")  # stale now; where it cannot be rebuilt, decoded in memory
        messages.clear()
        same(load(images, cache_dir, log=messages.append), load(images))
        if os.geteuid() != 0:
            assert any(m.startswith("warning: cannot write the image cache") for m in messages)
    finally:
        for path in (cache_dir, the_cache(cache_dir).parent, the_cache(cache_dir)):
            path.chmod(0o755)


def test_a_cache_too_large_for_memory_stays_memory_mapped(images, tmp_path):
    cache_dir, messages = tmp_path / "cache", []
    in_memory = load(images, cache_dir)
    mapped = load(images, cache_dir, memory_limit=0, log=messages.append)
    same(mapped, in_memory)
    assert is_memory_mapped(mapped.images) and is_memory_mapped(mapped.images[3:7])  # a view too
    assert not is_memory_mapped(in_memory.images) and not is_memory_mapped(mapped.images.clone())
    assert any("do not fit in memory" in m for m in messages)
    assert fits_in_memory(50, limit=100) and not fits_in_memory(51, limit=100)
    assert fits_in_memory(90, limit=100, fraction=0.9) and not fits_in_memory(1, limit=0)
    assert available_memory() is None or available_memory() > 0


def numbered(n):
    """n 4x4 images, image k filled with the value k, as uint8 (N, 1, 4, 4)."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()


def assert_same_batches(a, b, epochs=3):
    assert a.steps_per_epoch == b.steps_per_epoch
    for epoch in range(epochs):
        for i in [*range(a.steps_per_epoch), 2, 0]:  # in order, then random access, as resume does
            assert torch.equal(a.batch(epoch, i), b.batch(epoch, i))
            assert torch.equal(a.labels(epoch, i), b.labels(epoch, i))


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    n = 103
    np.save(tmp_path / "numbered.npy", numbered(n).numpy())
    on_disk = mapped_tensor(np.load(tmp_path / "numbered.npy", mmap_mode="r"))
    labels = torch.arange(n) * 7 % 10
    common = dict(batch_size=10, seed=3, image_size=4, device=CPU)
    plain = Batches(numbered(n), labels, **common)
    streamed = Batches(on_disk, labels, memory_limit=0, **common)
    assert not plain.from_disk and streamed.from_disk and streamed.streamed
    assert_same_batches(streamed, plain)
    assert not Batches(on_disk, labels, **common).from_disk  # it fits in memory: read as it is
    forced = Batches(numbered(n), labels, stream=True, **common)
    assert forced.from_disk
    assert_same_batches(forced, plain)
    for rank in range(2):
        shard = Ranks(rank, 2).shard
        assert_same_batches(Batches(on_disk, labels, memory_limit=0, shard=shard, **common),
                            Batches(numbered(n), labels, shard=shard, **common))


def test_a_mapped_folder_streams_the_same_batches(images, tmp_path):
    mapped = load(images, tmp_path / "cache", memory_limit=0)
    in_memory = load(images)
    common = dict(batch_size=4, seed=1, image_size=16, device=CPU)
    streamed = Batches(mapped.images, mapped.labels, memory_limit=0, **common)
    assert streamed.from_disk and streamed.images.data_ptr() == mapped.images.data_ptr()  # never copied
    assert_same_batches(streamed, Batches(in_memory.images, in_memory.labels, **common))


def test_the_folder_loader_takes_crop_cache_dir_and_progress(images, tmp_path):
    data = load_dataset("folder", data_dir=str(images), image_size=16, log=[].append, crop="none",
                        cache_dir=str(tmp_path / "cache"), progress=False)
    same(data, load(images, crop="none"))
    assert the_cache(tmp_path / "cache").is_dir()
    same(load_dataset("folder", data_dir=str(images), image_size=16, log=[].append), load(images))


def test_an_interrupted_build_leaves_no_valid_looking_cache(images, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load(images, cache_dir)
    change_folder(images, "added")
    real = folder.decode_into

    def crash(*args, **kw):
        real(*args, **kw)
        raise RuntimeError("killed while decoding")

    with monkeypatch.context() as patch:
        patch.setattr(folder, "decode_into", crash)
        with pytest.raises(RuntimeError, match="killed"):
            load(images, cache_dir)
    assert [p.name for p in the_cache(cache_dir).iterdir()] == [IMAGES]  # the old array; no manifest, no temp file
    messages = []
    same(load(images, cache_dir, log=messages.append), load(images))
    assert messages[0].startswith("caching")
