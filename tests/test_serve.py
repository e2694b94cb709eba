"""`gankit serve`: the explorer's endpoints (Flask's test client) and its command line.

The runs are tiny, made once for the session: conftest's explorer_runs.
The page itself, clicked in a real browser: tests/test_browser.py."""

import io
import json
import socket
import urllib.request

import numpy as np
import pytest
from explorer_browser import serving
from PIL import Image
from test_cli import assert_one_line_error, run_cli

from gankit.cli import main
from gankit.serve import create_app


@pytest.fixture(scope="module")
def clients(explorer_runs):
    return {name: create_app(explorer_runs / name).test_client() for name in ("gan", "cond", "vae")}


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.mimetype == "image/png"
    return np.array(Image.open(io.BytesIO(response.data)))


def test_info_says_what_the_run_is(clients, explorer_runs):
    info = {name: client.get("/api/info").get_json() for name, client in clients.items()}
    assert info["gan"] == {"run": "gan", "path": str(explorer_runs / "gan"), "model": "dcgan",
                           "conditional": False, "num_classes": 0, "nz": 8, "step": 2, "epoch": 0.5,
                           "image_size": 16, "max_n": 256, "title": "DCGAN", "maker": "the generator"}
    assert info["cond"]["conditional"] is True and info["cond"]["num_classes"] == 10
    assert info["vae"]["model"] == "vae" and info["vae"]["conditional"] is False
    assert info["vae"]["title"] == "convolutional VAE" and info["vae"]["maker"] == "the decoder"
    assert info["vae"]["nz"] == 32  # the VAE's latent size, not the --nz of a GAN


def test_the_page_is_one_offline_file_with_its_controls(clients):
    response = clients["gan"].get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.text
    for element in ('id="grid"', 'id="new-samples"', 'id="class"', 'id="t"', 'id="interp"', 'id="new-ends"',
                    "image-rendering: pixelated"):
        assert element in page, element
    assert "http://" not in page and "https://" not in page  # no CDN, no external asset: works offline


def test_samples_are_a_grid_fixed_by_the_seed_and_the_same_as_gankit_sample(clients, explorer_runs,
                                                                              tmp_path):
    client = clients["gan"]
    grid = png(client.get("/samples.png?seed=5&n=10"))
    assert grid.shape == (3 * 18 + 2, 4 * 18 + 2)  # 10 images: 4 a row, 3 rows; 16 px images, 2 px gaps
    assert np.array_equal(png(client.get("/samples.png?n=10&seed=5")), grid)
    assert not np.array_equal(png(client.get("/samples.png?seed=6&n=10")), grid)
    assert png(client.get("/samples.png")).shape == (8 * 18 + 2, 8 * 18 + 2)  # default: 64, seed 0
    # The grid that `gankit sample` writes for the same seed and n, byte for byte.
    assert main(["sample", str(explorer_runs / "gan"), "--grid", str(tmp_path / "g.png"), "--seed", "5",
                 "--n", "10"]) == 0
    assert client.get("/samples.png?seed=5&n=10").data == (tmp_path / "g.png").read_bytes()


def test_a_conditional_run_draws_the_class_asked_for(clients, explorer_runs, tmp_path):
    client = clients["cond"]
    threes = png(client.get("/samples.png?seed=1&n=16&class=3"))
    assert threes.shape == (4 * 18 + 2, 4 * 18 + 2)
    assert not np.array_equal(png(client.get("/samples.png?seed=1&n=16&class=4")), threes)
    assert not np.array_equal(png(client.get("/samples.png?seed=1&n=16")), threes)  # all classes in turn
    assert main(["sample", str(explorer_runs / "cond"), "--grid", str(tmp_path / "g.png"), "--seed", "1",
                 "--n", "16", "--class", "3"]) == 0
    assert client.get("/samples.png?seed=1&n=16&class=3").data == (tmp_path / "g.png").read_bytes()


@pytest.mark.parametrize("name", ["gan", "vae", "cond"])
def test_interpolation_goes_from_seed_a_to_seed_b(clients, name):
    client = clients[name]
    at = {t: png(client.get(f"/interpolate.png?a=3&b=4&t={t}")) for t in (0, 0.5, 1)}
    # One image (20 px: 16 and a 2 px frame); a conditional run without a class: its 10 classes in a row.
    assert at[0].shape == ((20, 10 * 18 + 2) if name == "cond" else (20, 20))
    assert not np.array_equal(at[0], at[0.5]) and not np.array_equal(at[0.5], at[1])
    assert np.array_equal(png(client.get("/interpolate.png?a=3&b=9&t=0")), at[0])  # t=0 is seed a's z exactly
    assert np.array_equal(png(client.get("/interpolate.png?a=4&b=1&t=0")), at[1])  # and t=1 seed b's
    if name == "cond":
        seven = png(client.get("/interpolate.png?a=3&b=4&t=0&class=7"))
        assert seven.shape == (20, 20)
        assert np.array_equal(seven, at[0][:, 7 * 18:7 * 18 + 20])  # the strip's class 7


def test_a_picture_already_seen_costs_no_forward_pass(clients):
    first = clients["gan"].get("/samples.png?seed=2")
    assert first.headers["ETag"] and "no-cache" in first.headers["Cache-Control"]
    again = clients["gan"].get("/samples.png?seed=2", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    other = clients["gan"].get("/samples.png?seed=3", headers={"If-None-Match": first.headers["ETag"]})
    assert other.status_code == 200
    # The same URL from another run's server (other weights) is another picture.
    assert clients["vae"].get("/samples.png?seed=2").headers["ETag"] != first.headers["ETag"]


@pytest.mark.parametrize("name,query,needle", [
    ("gan", "/samples.png?seed=x", "seed='x' is not a whole number"),
    ("gan", "/samples.png?seed=-1", "seed must be from 0"),
    ("gan", "/samples.png?seed=99999999999999999999", "seed must be from 0"),
    ("gan", "/samples.png?n=0", "n must be from 1 to 256"),
    ("gan", "/samples.png?n=257", "n must be from 1 to 256"),
    ("gan", "/samples.png?n=1.5", "n='1.5' is not a whole number"),
    ("gan", "/samples.png?class=1", "not conditional"),
    ("vae", "/interpolate.png?class=0", "not conditional"),
    ("cond", "/samples.png?class=10", "class must be from 0 to 9, got 10"),
    ("cond", "/samples.png?class=", "class='' is not a whole number"),
    ("cond", "/interpolate.png?class=-1", "class must be from 0 to 9"),
    ("gan", "/interpolate.png?t=1.5", "t must be from 0 to 1"),
    ("gan", "/interpolate.png?t=nan", "t must be from 0 to 1"),
    ("gan", "/interpolate.png?t=half", "t='half' is not a number"),
    ("gan", "/interpolate.png?a=1%0A2", "is not a whole number"),  # a newline stays inside the one line
    ("gan", "/interpolate.png?b=z", "b='z' is not a whole number"),
])
def test_a_bad_query_is_a_400_with_one_plain_line(clients, name, query, needle):
    response = clients[name].get(query)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert response.text.count("\n") == 1 and response.text.endswith("\n"), response.text
    assert needle in response.text and "Traceback" not in response.text


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c(explorer_runs):
    with serving(explorer_runs / "cond") as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "/api/info", timeout=30) as response:
            assert json.load(response)["num_classes"] == 10
        with urllib.request.urlopen(server.url + "/samples.png?class=2&n=4", timeout=30) as response:
            assert Image.open(io.BytesIO(response.read())).size == (2 * 18 + 2, 2 * 18 + 2)
    assert server.returncode == 0, server.stderr
    assert server.stderr.strip() == "stopped"


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_bad_serve_command_lines(explorer_runs, taken_port, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = str(explorer_runs / "gan")
    for args, needles in [
        (["serve", "no-such-run"], ["no-such-run", "does not exist"]),
        (["serve", str(tmp_path / "empty")], ["no checkpoint"]),
        (["serve", run, "--port", str(taken_port)], [f"port {taken_port}", "--port 0"]),
        (["serve", run, "--host", "192.0.2.1"], ["cannot listen on 192.0.2.1"]),  # an address not ours
        (["serve", run, "--port", "70000"], ["--port", "65535"]),
        (["serve", run, "--port", "http"], ["--port", "not a port number"]),
        (["serve", run, "--device", "banana"], ["--device 'banana'", "is not a device"]),
        (["serve"], ["run"]),
    ]:
        code, err = run_cli(args, capsys)
        assert_one_line_error(code, err, *needles)
