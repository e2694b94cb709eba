"""Inputs that are valid to the system but not what gankit expects: devices and long names
as write targets, JSON that Python takes and JSON does not, odd memory limits, image
modes beyond RGB and L, damaged metadata, and links that go round in circles. Each is
handled or refused in one line; none is a traceback, and nothing is left half-written."""

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gankit import files
from gankit.files import loads_strict, remove_stale_temps, write_atomic


def kind(path) -> str:
    mode = os.lstat(path).st_mode
    for name, test in (("link", stat.S_ISLNK), ("fifo", stat.S_ISFIFO), ("char", stat.S_ISCHR),
                       ("dir", stat.S_ISDIR), ("file", stat.S_ISREG)):
        if test(mode):
            return name
    return "other"


def no_rename(monkeypatch):
    """Make any rename a failure: a device must be written in place, never renamed over."""
    def refuse(*args):
        raise AssertionError(f"renamed over a device: {args}")

    monkeypatch.setattr(os, "replace", refuse)


# --- write_atomic: what it replaces, and what it writes in place ---------------------------------

def test_a_fifo_is_written_in_place_and_stays_a_fifo(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    no_rename(monkeypatch)
    write_atomic(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"] and kind(fifo) == "fifo"
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file beside it


def test_dev_null_stays_a_character_device(monkeypatch):
    no_rename(monkeypatch)  # as root, a rename would put a regular file at /dev/null
    assert write_atomic(Path("/dev/null"), b"gone") == Path("/dev/null")
    assert kind("/dev/null") == "char"
    assert not [p for p in Path("/dev").glob(".null.*")]


def test_a_regular_file_is_still_replaced_by_a_rename(tmp_path):
    target = tmp_path / "config.json"
    target.write_bytes(b"old")
    before = os.stat(target).st_ino
    hard_link = tmp_path / "old-copy"
    os.link(target, hard_link)  # a reader holding the old file still sees it whole
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and os.stat(target).st_ino != before
    assert hard_link.read_bytes() == b"old"


def test_a_link_is_followed_and_its_file_replaced(tmp_path):
    elsewhere = tmp_path / "real" / "config.json"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"old")
    (tmp_path / "runs").mkdir()
    link = tmp_path / "runs" / "config.json"
    link.symlink_to(Path("..") / "real" / "config.json")
    second = tmp_path / "second-link"
    second.symlink_to(link)  # a link to a link: followed to the end
    write_atomic(second, b"new")
    assert kind(link) == "link" and kind(second) == "link" and kind(elsewhere) == "file"
    assert elsewhere.read_bytes() == b"new" and link.read_bytes() == b"new"
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["config.json"]  # the temporary went
    dangling = tmp_path / "runs" / "later.json"
    dangling.symlink_to(Path("..") / "real" / "later.json")
    write_atomic(dangling, b"made")  # as open() would: the file the link names is created
    assert kind(dangling) == "link" and (tmp_path / "real" / "later.json").read_bytes() == b"made"


def test_a_directory_is_refused_and_left_as_it_is(tmp_path):
    folder = tmp_path / "samples.png"
    folder.mkdir()
    (folder / "inside").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError, match="Is a directory"):
        write_atomic(folder, b"image")
    assert kind(folder) == "dir" and [p.name for p in tmp_path.iterdir()] == ["samples.png"]
    assert (folder / "inside").read_bytes() == b"kept"


def test_a_socket_is_refused_and_left_as_it_is(tmp_path):
    import socket

    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.sock"))
        with pytest.raises(OSError, match="Not a file, FIFO or character device"):
            write_atomic(tmp_path / "s.sock", b"x")
        assert stat.S_ISSOCK(os.lstat(tmp_path / "s.sock").st_mode) and len(list(tmp_path.iterdir())) == 1
    finally:
        server.close()


def test_a_link_loop_is_an_os_error_not_a_hang(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "a", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# --- long names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a" * 255, "b" * 242, "é" * 127 + "c", "d" * 241 + ".pt"])
def test_a_name_as_long_as_the_file_system_allows_can_be_written(tmp_path, monkeypatch, name):
    assert len(os.fsencode(name)) <= 255 == os.pathconf(tmp_path, "PC_NAME_MAX")
    temporaries = []
    real_open = os.open

    def recording(path, *args):
        temporaries.append(Path(path).name)
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", recording)
    write_atomic(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    temporary = next(t for t in temporaries if t.endswith(files.TEMP_SUFFIX))
    assert temporary.startswith(".") and len(os.fsencode(temporary)) <= 255
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_cut_temporary_names_still_end_as_stale_temporaries_do(tmp_path):
    cut = files.temp_name("x" * 255, 255)
    assert len(cut) == 255 and cut.startswith(".xxx") and cut.endswith(".tmp")
    assert files.temp_name("short", 255).startswith(".short.")
    assert len(os.fsencode(files.temp_name("é" * 127, 255))) <= 255  # cut by characters, never mid-character
    (tmp_path / cut).write_bytes(b"left by a killed write")
    (tmp_path / ("x" * 255)).write_bytes(b"whole")
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x" * 255]


# --- strict JSON ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    ('{"skipped": Infinity}', "Infinity is not a JSON number"),
    ('[-Infinity]', "-Infinity is not a JSON number"),
    ('{"size": NaN}', "NaN is not a JSON number"),
    ('[1e400]', "1e400 is too large for a number"),
    ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
    ('{"a": 1', "Expecting"),
])
def test_loads_strict_refuses_what_json_does_not_allow(text, why):
    with pytest.raises(ValueError, match=why) as info:
        loads_strict(text)
    assert "\n" not in str(info.value)


def test_loads_strict_reads_plain_json(tmp_path):
    text = '{"a": [1, 2.5, -3e10, "x", null, true], "b": {"c": []}}'
    assert loads_strict(text) == loads_strict(text.encode()) == {"a": [1, 2.5, -3e10, "x", None, True],
                                                                  "b": {"c": []}}
    assert loads_strict("[" * 100 + "]" * 100) is not None  # some nesting is fine
    (tmp_path / "x.json").write_text(text)
    assert files.read_json(tmp_path / "x.json") == loads_strict(text)


# --- the folder cache's manifest -----------------------------------------------------------------

def edit_manifest(found: Path, how: str) -> None:
    """Rewrite the manifest into JSON that Python's json may read but gankit never writes."""
    import json

    path = found / "manifest.json"
    fields = json.loads(path.read_text())
    n = len(fields["labels"])
    text = None
    if how == "skipped Infinity":
        text = json.dumps({**fields, "skipped": float("inf")})  # json writes it as Infinity
    elif how == "npy_bytes NaN":
        text = json.dumps({**fields, "npy_bytes": float("nan")})
    elif how == "skipped 1e400":
        text = json.dumps(fields).replace('"skipped": 1', '"skipped": 1e400')
    elif how == "crop nested 10,000 deep":
        text = json.dumps({**fields, "crop": None}).replace("null", "[" * 10_000 + "]" * 10_000)
    elif how == "labels nested 10,000 deep":
        text = json.dumps({**fields, "labels": None}).replace("null", "[" * 10_000 + "]" * 10_000)
    elif how == "not an object":
        text = json.dumps([fields])
    elif how == "not UTF-8":
        path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])
        return
    else:
        changes = {
            "labels as strings": {"labels": [str(label) for label in fields["labels"]]},
            "labels out of range": {"labels": [5] * n},  # two class folders: 0 and 1
            "labels negative": {"labels": [-3] * n},
            "labels half unlabelled": {"labels": [-1] + fields["labels"][1:]},
            "labels not integers": {"labels": [0.5] * n},
            "labels true": {"labels": [True] * n},
            "shape negative": {"shape": [-n, -3, -16, -16]},
            "shape of other images": {"shape": [n, 3, 16, 17]},
            "shape of three sizes": {"shape": [n, 3, 16]},
            "shape as text": {"shape": "30x3x16x16"},
            "skipped as text": {"skipped": "1"},
            "skipped negative": {"skipped": -1, "shape": [n + 2, 3, 16, 16], "labels": fields["labels"] + [0, 0]},
            "files not entries": {"files": [1, 2, 3]},
            "size as text": {"size": "16"},
        }
        text = json.dumps({**fields, **changes[how]})
    path.write_text(text)


HOSTILE_MANIFESTS = ["skipped Infinity", "npy_bytes NaN", "skipped 1e400", "crop nested 10,000 deep",
                     "labels nested 10,000 deep", "not an object", "not UTF-8", "labels as strings",
                     "labels out of range", "labels negative", "labels half unlabelled", "labels not integers",
                     "labels true", "shape negative", "shape of other images", "shape of three sizes",
                     "shape as text", "skipped as text", "skipped negative", "files not entries", "size as text"]


@pytest.mark.parametrize("how", HOSTILE_MANIFESTS)
def test_a_hostile_manifest_is_a_damaged_cache_rebuilt_in_one_line(tmp_path, monkeypatch, how):
    from test_folder_cache import count_decodes, load, make_folder, same, the_cache

    images, cache_dir = make_folder(tmp_path / "images"), tmp_path / "cache"
    first = load(images, cache_dir)
    first.images = first.images.clone()  # it maps the cache file, which the rebuild replaces
    edit_manifest(the_cache(cache_dir), how)
    calls, messages = count_decodes(monkeypatch), []
    same(load(images, cache_dir, log=messages.append), first)
    assert calls == [1]
    assert messages[0].startswith(f"rebuilding the image cache in '{the_cache(cache_dir)}': ")
    assert "\n" not in messages[0] and len(messages[0]) < 300
    reason = messages[0].split("': ", 1)[1]
    assert reason.startswith("its manifest is damaged") or reason.startswith("it was made with another")
    same(load(images, cache_dir), first)
    assert calls == [1]  # rebuilt: valid again


# --- GANKIT_MEMORY_LIMIT -------------------------------------------------------------------------

@pytest.mark.parametrize("value, limit", [("8000000000", 8_000_000_000), ("2G", 2 * 2**30), (" 512m ", 512 * 2**20),
                                          ("1.5K", 1536), ("0", 0), ("", None)])
def test_memory_limit_reads_bytes_and_suffixes(monkeypatch, value, limit):
    from gankit.data.folder_cache import memory_limit_from_env

    monkeypatch.setenv("GANKIT_MEMORY_LIMIT", value)
    assert memory_limit_from_env() == limit


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "abc", "1e400", "8GB", "Infinity", "9" * 400 + ".5x", "٣"])
def test_a_memory_limit_that_is_not_one_is_a_one_line_error(monkeypatch, value):
    from gankit.data.folder_cache import available_memory, memory_limit_from_env
    from gankit.errors import UserError

    monkeypatch.setenv("GANKIT_MEMORY_LIMIT", value)
    for read in (memory_limit_from_env, available_memory):
        with pytest.raises(UserError) as info:
            read()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"GANKIT_MEMORY_LIMIT={value!r} is not an amount")
        assert "e.g. GANKIT_MEMORY_LIMIT=8000000000" in message and "8G" in message


def test_train_with_a_bad_memory_limit_stops_before_decoding(tmp_path, capsys, monkeypatch):
    from test_cli import assert_one_line_error, run_cli
    from test_folder_cache import make_folder

    images = make_folder(tmp_path / "images", n=4)
    monkeypatch.setenv("GANKIT_MEMORY_LIMIT", "inf")
    code, err = run_cli(["train", "--dataset", "folder", "--data-dir", str(images), "--image-size", "16",
                         "--width", "8", "--nz", "8", "--batch-size", "4", "--max-steps", "1", "--no-progress",
                         "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "GANKIT_MEMORY_LIMIT='inf'", "set it to bytes")
    assert not list(tmp_path.glob("cache/folders/*/images.npy"))  # failed before a file was decoded


# --- image modes: one rule for each (folder.as_mode) ---------------------------------------------

def square(row) -> np.ndarray:
    """A row of 4 pixels as a 4x4 image (4 rows alike): decoded at 4x4 with no crop, nothing
    is resampled, so each pixel can be compared with the rule."""
    row = np.asarray(row)
    return np.repeat(row[None], 4, axis=0)


WIDE = square([0, 128, 32768, 65535]), square([1, 129, 257, 65279])  # 16-bit gray values


def scaled16(values) -> np.ndarray:
    """The documented rule for 16-bit gray: round(v * 255 / 65535), in floats here."""
    return np.round(np.clip(np.asarray(values, np.float64), 0, 65535) * 255 / 65535).astype(np.uint8)


def luma(rgb) -> np.ndarray:
    """ITU-R 601 gray of an RGB array, as the docstring says channels=1 gives."""
    rgb = np.asarray(rgb, np.float64)
    return np.round(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.uint8)


def gray(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def as_tiff(img, path):
    """A TIFF under a .png name: Pillow opens a file by what it holds, so such a file is read,
    and it is how an 'I;16B', 'I' or 'F' image reaches the loader."""
    img.save(path, format="TIFF")


def palette_image():
    img = Image.fromarray(square([0, 1, 2, 3]).astype(np.uint8), "P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 20, 40, 60] + [0] * (256 - 4) * 3)
    return img


RGBA = square([[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128], [10, 200, 30, 255]]).astype(np.uint8)
PALETTE = square([[0, 0, 0], [255, 0, 0], [0, 255, 0], [20, 40, 60]])
LA = square([[100, 255], [100, 0], [0, 128], [200, 255]]).astype(np.uint8)
F_UNIT, F_BYTE = square([0, 0.25, 1.0, np.nan]).astype(np.float32), square([-2, 100.4, 254.6, 300]).astype(np.float32)
INT32 = square([-5, 0, 257, 70000]).astype(np.int32)

# Each mode: how the file is made, and the RGB that the documented rule gives (channels=1: its luma).
MODES = {
    "I;16": (lambda p: Image.fromarray(WIDE[0].astype(np.uint16)).save(p), gray(scaled16(WIDE[0]))),
    "I;16 again": (lambda p: Image.fromarray(WIDE[1].astype(np.uint16)).save(p), gray(scaled16(WIDE[1]))),
    "I;16B": (lambda p: as_tiff(Image.frombytes("I;16B", (4, 4), WIDE[0].astype(">u2").tobytes()), p),
              gray(scaled16(WIDE[0]))),
    "I": (lambda p: as_tiff(Image.fromarray(INT32), p), gray(scaled16(np.clip(INT32, 0, 65535)))),
    "F in 0..1": (lambda p: as_tiff(Image.fromarray(F_UNIT), p), gray(square([0, 64, 255, 0]))),
    "F in 0..255": (lambda p: as_tiff(Image.fromarray(F_BYTE), p), gray(square([0, 100, 255, 255]))),
    "RGBA": (lambda p: Image.fromarray(RGBA, "RGBA").save(p),  # red, transparent, half-transparent blue, green
             square([[255, 0, 0], [255, 255, 255], [127, 127, 255], [10, 200, 30]])),
    "P": (lambda p: palette_image().save(p), PALETTE),
    "P with transparency": (lambda p: palette_image().save(p, transparency=1),
                            square([[0, 0, 0], [255, 255, 255], [0, 255, 0], [20, 40, 60]])),
    "LA": (lambda p: Image.fromarray(LA, "LA").save(p), gray(square([100, 255, 127, 200]))),
    "L with a transparent value": (lambda p: Image.fromarray(square([0, 50, 50, 200]).astype(np.uint8))
                                   .save(p, transparency=50), gray(square([0, 255, 255, 200]))),
    "I;16 with a transparent value": (lambda p: Image.fromarray(WIDE[1].astype(np.uint16)).save(p, transparency=257),
                                      gray(np.where(WIDE[1] == 257, 255, scaled16(WIDE[1])))),
    "1": (lambda p: Image.fromarray(square([True, False, True, True])).save(p), gray(square([255, 0, 255, 255]))),
    "CMYK": (lambda p: Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(p.with_suffix(".jpg"), quality=100),
             square([[0, 255, 255]] * 4)),
}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("mode", list(MODES))
def test_each_image_mode_decodes_to_its_documented_values(tmp_path, mode, channels):
    from gankit.data.folder import load_image, read_image

    make, rgb = MODES[mode]
    path = tmp_path / "image.png"
    make(path)
    path = path if path.exists() else path.with_suffix(".jpg")
    with Image.open(path) as img:
        assert img.mode == mode.split(" ")[0]  # the file really is in that mode
    expected = (rgb if channels == 3 else luma(rgb)[..., None]).astype(int)
    decoded = load_image(path, 4, channels, crop="none")
    assert decoded.shape == (4, 4, channels) and decoded.dtype == np.uint8
    tolerance = 3 if mode == "CMYK" else 1  # 1: a half-transparent blend, or luma's rounding; CMYK: a JPEG
    assert np.abs(decoded.astype(int) - expected).max() <= tolerance, (decoded[0, :, 0], expected[0, :, 0])
    if mode.startswith(("I", "F", "1", "L with")):
        assert np.array_equal(decoded, expected)  # integer rules: exact
    image, warning = read_image(path, size=4, channels=channels, crop="none")
    assert np.array_equal(image, decoded.transpose(2, 0, 1)) and warning is None


# --- Pillow's warnings, said once ----------------------------------------------------------------

def jpeg_with_corrupt_exif(pixels: np.ndarray) -> bytes:
    """A JPEG from Pillow with an APP1 Exif segment inserted after SOI whose TIFF directory
    promises 65,535 entries and holds 3: Pillow reads the pixels and warns "Corrupt EXIF
    data", as it does for some cameras' files."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    jpeg = buffer.getvalue()
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\xff\xff" + bytes(30)  # little-endian, directory at 8: 65,535 entries
    segment = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


def photo_folder(root: Path, damaged: int, fine: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for k in range(damaged + fine):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        name = f"{k:03d}.jpg"
        if k < damaged:
            (root / name).write_bytes(jpeg_with_corrupt_exif(pixels))
            Image.fromarray(pixels).save(root.parent / f"plain-{name}", "JPEG", quality=95)  # the same, no EXIF
        else:
            Image.fromarray(pixels).save(root / name, "JPEG", quality=95)
    return root


def test_the_crafted_jpeg_does_make_pillow_warn(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_with_corrupt_exif(np.zeros((8, 8, 3), np.uint8)))
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):
        Image.open(path).close()


@pytest.mark.parametrize("workers, cached", [(1, False), (2, False), (2, True)])
def test_damaged_metadata_is_one_warning_line_for_the_whole_folder(tmp_path, capfd, workers, cached):
    import warnings

    from gankit.data.folder import load_folder, load_image

    root = photo_folder(tmp_path / "photos", damaged=5, fine=3)
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning that escaped would fail the load here
        data = load_folder(root, size=16, channels=3, log=messages.append, progress=False, workers=workers,
                           cache_dir=tmp_path / "cache" if cached else None)
    said = [m for m in messages if "Pillow" in m]
    assert len(said) == 1 and "\n" not in said[0], messages
    assert said[0].startswith("warning: 5 of 8 files had damaged metadata, which Pillow warned of (e.g. '")
    assert "000.jpg': Corrupt EXIF data." in said[0] and said[0].endswith("; their pixels were read")
    assert "Warning" not in capfd.readouterr().err  # nor from a worker process
    assert len(data) == 8  # every file read
    for k in range(5):  # the pixels, as the same JPEG without its EXIF gives them
        plain = load_image(tmp_path / f"plain-{k:03d}.jpg", 16, 3)
        assert np.array_equal(data.images[k].permute(1, 2, 0).numpy(), plain)


def test_files_without_warnings_say_nothing_of_metadata(tmp_path):
    from gankit.data.folder import load_folder

    messages = []
    load_folder(photo_folder(tmp_path / "photos", damaged=0, fine=4), size=16, log=messages.append, progress=False)
    assert messages == []


def test_decode_into_reports_warnings_from_pickled_workers_too(tmp_path):
    from gankit.data.folder import decode_into, list_images

    paths = list_images(photo_folder(tmp_path / "photos", damaged=2, fine=2))
    messages = []
    target = np.zeros((4, 3, 16, 16), np.uint8)  # not shared memory: images come back pickled
    kept = decode_into(target, paths, size=16, channels=3, workers=2, progress=False, log=messages.append)
    assert kept == [0, 1, 2, 3]
    assert len(messages) == 1 and messages[0].startswith("warning: 2 of 4 files had damaged metadata")


# --- links in an image folder --------------------------------------------------------------------

def linked_folder(tmp_path: Path) -> Path:
    """An image folder with every kind of link a folder can hold."""
    root = tmp_path / "images"
    for name in ("cats/1.png", "cats/2.png", "dogs/3.png", "elsewhere/birds/4.png"):
        (root.parent / name if name.startswith("elsewhere") else root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), len(name), np.uint8)).save(
            root.parent / name if name.startswith("elsewhere") else root / name)
    (root / "cats" / "up").symlink_to("..")            # a loop: back to root
    (root / "dogs" / "again").symlink_to(root / "dogs")  # a loop: to itself
    (root / "kittens").symlink_to("cats")              # a second name for a folder inside root
    (root / "birds").symlink_to(tmp_path / "elsewhere" / "birds")  # a class folder linked in from outside
    (tmp_path / "elsewhere" / "birds" / "home").symlink_to(root)  # and a way back from there
    (root / "cats" / "loop.png").symlink_to("loop.png")  # a file link round in a circle
    (root / "dogs" / "gone.png").symlink_to("missing.png")  # a dangling link
    return root


def test_list_images_follows_links_once_and_never_loops(tmp_path):
    from gankit.data.folder import list_images

    root = linked_folder(tmp_path)
    listed = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert listed == ["birds/4.png", "cats/1.png", "cats/2.png", "cats/loop.png", "dogs/3.png", "dogs/gone.png"]


def test_a_folder_with_loops_and_dangling_links_loads_in_one_line_each(tmp_path):
    from gankit.data.folder import load_folder

    root = linked_folder(tmp_path)
    messages = []
    data = load_folder(root, size=8, channels=3, log=messages.append, progress=False, cache_dir=tmp_path / "cache")
    assert len(data) == 4 and data.labels.tolist() == [0, 1, 1, 2]  # birds, cats, cats, dogs
    assert messages[-1] == f"warning: skipped 2 of 6 files under '{root}' that could not be read as images"
    messages.clear()
    assert len(load_folder(root, size=8, channels=3, log=messages.append, progress=False,
                           cache_dir=tmp_path / "cache")) == 4
    assert len(messages) == 1  # the cache, with the dangling links in its listing, is reused
