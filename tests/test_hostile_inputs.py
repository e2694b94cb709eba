"""Inputs that are valid to the system but not what gankit expects: devices and long names
as write targets, JSON that Python takes and JSON does not, odd memory limits, image
modes beyond RGB and L, damaged metadata, and links that go round in circles. Each is
handled or refused in one line; none is a traceback, and nothing is left half-written."""

import os
import stat
import threading
from pathlib import Path

import pytest

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
