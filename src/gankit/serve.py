"""`gankit serve RUN`: a local web page to explore a trained run.

The page (explorer.html, shipped beside this module) is static: it asks this server for
PNGs by URL. Every picture is a pure function of its query (seed, n, class, t), so a URL
always shows the same picture: the browser may cache it, a test can compare it, and
`/samples.png?seed=S&n=N` is the grid that `gankit sample RUN --grid g.png --seed S --n N`
writes.

Flask on werkzeug's threaded development server: right for one person on their own
machine, which is why it listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hashlib
import math
import socket
import threading
from importlib import resources
from pathlib import Path

import torch
from flask import Flask, Response, jsonify, request

from gankit import sampling, seeds
from gankit.checkpoint import about, digest
from gankit.errors import UserError
from gankit.runs import load_run

MAX_N = 256       # images in one grid: 256 DCGAN images take about 0.2 s on one CPU core
STRIP = 10        # a conditional walk without a class: the same z drawn as each of the first 10 classes
MAX_SEED = seeds.SAMPLE_SEED_MAX


class BadQuery(ValueError):
    """A query parameter the server cannot use: HTTP 400 with this one-line message."""


def run_name(run: Path) -> str:
    """The run folder's name (a checkpoint file given directly: its run folder's)."""
    run = run.resolve()
    if run.is_file() and run.parent.name == "checkpoints":
        return run.parent.parent.name
    return run.name


def number(name: str, default, low, high, kind=int):
    """Query parameter `name` as a `kind` (int or float) from low to high, or BadQuery."""
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadQuery(f"{name}={text[:40]!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadQuery(f"{name} must be from {low} to {high}, got {value if kind is int else text[:40]}")
    return value


def class_query(classes: int) -> int | None:
    """The `class` parameter: one of a conditional run's classes, or None."""
    if not classes:
        if "class" in request.args:
            raise BadQuery("class: this run is not conditional (it was trained without --conditional)")
        return None
    return number("class", None, 0, classes - 1)


def png_response(draw, weights: str, lock: threading.Lock) -> Response:
    """The PNG of draw() -> (images, nrow), or 304 when the browser already has it."""
    etag = f"{weights}-{hashlib.sha1(request.full_path.encode()).hexdigest()[:16]}"
    if etag in request.if_none_match:
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    with lock, torch.no_grad():
        images, nrow = draw()
    response = Response(sampling.grid_png(images, nrow=nrow), mimetype="image/png")
    response.set_etag(etag)
    response.cache_control.no_cache = True  # ask again each time; the ETag makes that cheap
    return response


def create_app(run: Path, device: str = "cpu", settings: dict | None = None) -> Flask:
    """The explorer's Flask app for a run, loaded once here (UserError when it cannot be);
    `settings`: how it samples, in place of the run's own (gankit.runs.SAMPLING_OVERRIDES)."""
    config, task, state, native = load_run(run, device=device, sampling=settings)
    classes = task.num_classes
    facts = about(state)
    step = facts.step
    steps_per_epoch = facts.dataset_size // config.batch_size
    info = {
        "run": run_name(run), "path": str(run), "model": config.model, "conditional": bool(classes),
        "title": type(task).title, "maker": type(task).maker,
        "num_classes": classes, "nz": task.nz, "step": step, "image_size": native,
        "epoch": round(step / steps_per_epoch, 1) if steps_per_epoch else None, "max_n": MAX_N,
    }
    page = resources.files("gankit").joinpath("explorer.html").read_text(encoding="utf-8")
    # Pictures depend on the run's weights and the query alone: an ETag of both lets the
    # browser keep what it has seen (moving the slider back costs no forward pass). The
    # weights' hash changes whenever the run does, even one trained anew to the same step.
    # The sampling settings too: another solver draws other pictures from the same weights.
    weights = digest(state)[:12] + hashlib.sha1(repr(sorted((settings or {}).items())).encode()).hexdigest()[:6]
    lock = threading.Lock()  # one model, a thread per request: one forward pass at a time

    app = Flask(__name__)

    @app.errorhandler(BadQuery)
    def bad_query(error):
        return Response(f"{error}\n", status=400, mimetype="text/plain")

    def picture(draw) -> Response:
        return png_response(draw, weights, lock)

    def label() -> int | None:
        return class_query(classes)

    def latent(seed: int) -> torch.Tensor:
        """(1, nz): the z of a seed, drawn on the CPU as `generate` draws its z's."""
        return task.noise(1, rng=torch.Generator().manual_seed(seed)).cpu()

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/api/info")
    def api_info():
        return jsonify(info)

    @app.get("/samples.png")
    def samples():
        """A grid of n images from one seed; a conditional run: all of class `class`, else
        the classes in turn (n = C * C with C columns puts one class in each column)."""
        seed, n, k = number("seed", 0, 0, MAX_SEED), number("n", 64, 1, MAX_N), label()
        return picture(lambda: (sampling.generate(task, n, seed=seed, native=native, label=k), None))

    @app.get("/interpolate.png")
    def interpolate():
        """The image at fraction t of the slerp from seed a's z to seed b's. A conditional run
        without a class: one row, the same z drawn as each of the first STRIP classes."""
        a, b = number("a", 1, 0, MAX_SEED), number("b", 2, 0, MAX_SEED)
        t, k = number("t", 0.5, 0, 1, float), label()

        def draw():
            z = sampling.slerp(latent(a), latent(b), t)
            labels = sampling.sample_labels(task, 1 if k is not None else min(classes, STRIP), k)
            if labels is not None:
                z = z.expand(len(labels), -1)
            images = sampling.decode(task, z.to(task.device), native=native, labels=labels)
            return images, len(images)

        return picture(draw)

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or UserError: werkzeug, binding by itself, would print its own
    lines and exit with code 1 when the port is taken."""
    from werkzeug.serving import select_address_family

    family = select_address_family(host, port)  # the family werkzeug will expect
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug: restart at once
        sock.bind(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4])
        sock.listen(128)
    except OSError as e:  # taken, no such host, not this machine's address, a port < 1024
        sock.close()
        raise UserError(f"cannot listen on {host} port {port} ({e.strerror or e}); pick another --port "
                        "(--port 0 takes a free one) or --host") from None
    return sock


def serve(run: Path, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          settings: dict | None = None) -> None:
    """Serve the explorer until Ctrl+C."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):  # no line per image; errors are still logged
            pass

    app = create_app(run, device, settings)
    sock = listen(host, port)
    server = make_server(host, port, app, threaded=True, request_handler=Quiet, fd=sock.fileno())
    sock.close()  # the server holds its own duplicate of the socket
    # Request threads are joined when the server closes (werkzeug closes it on Ctrl+C): a
    # daemon thread still inside torch while the interpreter finalizes can abort the process
    # ("terminate called without an active exception", exit -6) instead of exiting 0.
    server.daemon_threads = False
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {run} at http://{shown}:{server.port} (Ctrl+C stops)", flush=True)
    server.serve_forever()  # werkzeug's: returns on Ctrl+C, the socket closed
