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
    with pytest.raises(IsADirectoryError, match="is a directory; give the path of a file"):
        write_atomic(folder, b"image")
    assert kind(folder) == "dir" and [p.name for p in tmp_path.iterdir()] == ["samples.png"]
    assert (folder / "inside").read_bytes() == b"kept"


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
