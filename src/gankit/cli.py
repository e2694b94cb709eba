"""The `gankit` command: parse, validate, call the library, print.

Every mistake a user can make ends as one line `error: ...` on stderr and exit
code 2, with no traceback (gankit.errors.UserError).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from gankit import checks, sampling, seeds
from gankit.config import TrainConfig
from gankit.errors import GankitError, UserError
from gankit.export import export_run
from gankit.metrics.evaluator import classify, evaluator_path
from gankit.metrics.judge import DEFAULT_FEATURES, FEATURES, feature_judge, judge_run, judge_with
from gankit.metrics.judge_evaluator import evaluator_cache, evaluator_for
from gankit.metrics.request import Request
from gankit.registry import CHOICES, evaluator_datasets, flag, load_dataset, model_defaults
from gankit.runs import SAMPLING_OVERRIDES, load_run, resume_with
from gankit.serve import serve
from gankit.training.loop import train
from gankit.training.nll import evaluate_nll
from gankit.version import __version__


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UserError(f"{message} (see `{self.prog} --help`)")


def whole(low: int = 1, high: int | None = None):
    """An argparse type: the text as a whole number in [low, high], by checks.problem (the
    API's rule too), said as argparse says a bad value ("argument --n: ...")."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        wrong = checks.problem(value, low, high)
        if wrong:
            raise argparse.ArgumentTypeError(wrong)
        return value
    return convert


positive_int = whole()
seed_number = whole(0, seeds.SAMPLE_SEED_MAX)


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, got {value}")
    return value


def one_of(choices) -> str:
    """The metavar of a flag with fixed choices: `{a,b,c}`, as argparse writes them."""
    return "{" + ",".join(map(str, choices)) + "}"


# How a TrainConfig annotation becomes a flag: the text's converter (bool: --x / --no-x).
CONVERTERS = {"int": int, "float": float, "str": str}


def add_setting(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    """The `gankit train` flag of one TrainConfig field: its name, type, default and help
    are the field's (config.setting), the choices of a name-valued one the table's. Values
    are checked by gankit.resolve, so the CLI and the API refuse a value with one message."""
    kinds = [k.strip() for k in str(f.type).split("|") if k.strip() != "None"]
    default = f.default
    shown = f"default: {default}"
    if default is None and model_defaults(f.name):
        shown += f"; the model's: {model_defaults(f.name)}"
    extra = {"metavar": one_of(CHOICES[f.name])} if f.name in CHOICES else {}
    if kinds == ["bool"]:
        extra = {"action": argparse.BooleanOptionalAction}
    else:
        extra["type"] = CONVERTERS[kinds[0]] if len(kinds) == 1 else str  # str | int: the text, parsed later
    parser.add_argument(flag(f.name), help=f"{f.metadata['doc']} ({shown})", **extra)


def add_sampling_settings(parser: argparse.ArgumentParser) -> None:
    """The settings of how a run samples that `sample`, `eval` and `serve` may change
    (gankit.runs.SAMPLING_OVERRIDES): the training flags themselves, default the run's own."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in SAMPLING_OVERRIDES:
        add_setting(parser, fields[name])


def sampling_settings(args: argparse.Namespace) -> dict:
    """The sampling settings given on the command line (those left out stay the run's)."""
    return {name: getattr(args, name) for name in SAMPLING_OVERRIDES if getattr(args, name) is not None}


def build_parser() -> Parser:
    parser = Parser(prog="gankit", description="Train, sample and judge image generative models.")
    parser.add_argument("--version", action="version", version=f"gankit {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    add_train_command(sub)
    add_sample_command(sub)
    add_export_command(sub)
    add_eval_command(sub)
    add_evaluator_command(sub)
    add_serve_command(sub)
    add_eval_nll_command(sub)
    return parser


def add_train_command(sub) -> None:
    t = sub.add_parser("train", help="train a model (default: the tutorial's DCGAN on MNIST)",
                       argument_default=argparse.SUPPRESS,
                       description=f"Train a model (default: --model {TrainConfig.model} on --dataset "
                       f"{TrainConfig.dataset}, {TrainConfig.epochs} epochs). Every setting of gankit.train is a flag.")
    t.add_argument("--resume", metavar="RUN", help="go on with the run in this folder (or from a checkpoint "
                   "file in its checkpoints/)")
    for f in dataclasses.fields(TrainConfig):
        add_setting(t, f)


def add_sample_command(sub) -> None:
    s = sub.add_parser("sample", help="generate images from a trained run")
    s.add_argument("run", help="run folder (or a checkpoint file)")
    s.add_argument("--n", type=positive_int, help="how many images (default: 10000, or 64 with --grid; "
                   "with --interpolate: how many walks, default 8)")
    s.add_argument("--seed", type=seed_number, default=0, help="same seed, same images (default: 0)")
    s.add_argument("--out", default=None, help="write a .npz with a uint8 array 'images' (default: samples.npz; "
                   "with --interpolate: a .png, default walk.png)")
    s.add_argument("--grid", help="write a PNG grid instead")
    s.add_argument("--interpolate", action="store_true", help="walk the latent space: a PNG with one walk a row, "
                   "each from one random z to another (slerp), and a GIF of the walks beside it (same name, .gif)")
    s.add_argument("--steps", type=positive_int, help="images per walk with --interpolate (default: 8)")
    s.add_argument("--class", dest="label", type=int, metavar="K", help="a --conditional run: every image of "
                   "class K, 0 to C-1 (default: the classes in turn)")
    s.add_argument("--batch-size", type=positive_int, default=500)
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    add_sampling_settings(s)


def add_export_command(sub) -> None:
    x = sub.add_parser("export", help="write a run's generator to a .safetensors or .onnx file",
                       description="Write the generator alone (a VAE's decoder; the averaged G of an --ema run), "
                       "z (N, nz) -> images (N, C, S, S) in [-1, 1] at the network's size, with the run's "
                       "settings as metadata. MNIST-like runs output 32x32: crop [..., 2:30, 2:30] for 28x28. "
                       "A --conditional run's generator takes labels (N,) int64 as a second input.")
    x.add_argument("run", help="run folder (or a checkpoint file)")
    x.add_argument("--out", required=True, help="the file to write, e.g. generator.safetensors or generator.onnx")
    x.add_argument("--format", choices=("safetensors", "onnx"), help="default: from --out's suffix; onnx needs "
                   "`pip install 'gankit[export]'`")


def add_eval_command(sub) -> None:
    j = sub.add_parser("eval", help="judge samples: FID, KID, classifier score, precision/recall, modes")
    j.add_argument("target", help="a run folder, or a .npz from `gankit sample`")
    j.add_argument("--features", default=DEFAULT_FEATURES, metavar=one_of(FEATURES), help="whose features judge "
                   f"(default: {DEFAULT_FEATURES}): gankit's own MNIST classifier, offline, or Inception-v3, the "
                   "figures papers quote, for any images (docs/usage.md)")
    j.add_argument("--reference", metavar="DIR", help="inception: a folder of real images to judge against "
                   "(default: the run's training images)")
    j.add_argument("--feature-weights", metavar="PATH", help="inception: the network file inception-2015-12-05.pt "
                   "(default: gankit's cache, downloaded on first use)")
    j.add_argument("--dataset", help="the data the samples imitate (a run knows its own; .npz default: mnist)")
    j.add_argument("--data-dir", help="where the data is (a run knows its own)")
    j.add_argument("--n", type=positive_int, default=10000, help="samples to draw from a run (default: 10000)")
    j.add_argument("--seed", type=seed_number, default=0)
    j.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    j.add_argument("--json", action="store_true", help="print one JSON object")
    j.add_argument("--no-progress", dest="progress", action="store_false")
    add_sampling_settings(j)


def add_evaluator_command(sub) -> None:
    v = sub.add_parser("evaluator", help="the judge's own classifier: build it ahead of first use")
    vsub = v.add_subparsers(dest="action", parser_class=Parser, metavar="ACTION", required=True)
    vt = vsub.add_parser("train", help="train and cache the evaluator of a labelled dataset (or load it)",
                         description="Train the evaluator (a small CNN) on the train split and cache it, keyed "
                         "by a hash of the data and its architecture; then report its test accuracy. "
                         "Commands that judge samples do this on first use.")
    vt.add_argument("--dataset", choices=evaluator_datasets(), default=TrainConfig.dataset,
                    help=f"default: {TrainConfig.dataset} (other judged datasets borrow one of these)")
    vt.add_argument("--data-dir", help="where the data is (default: $GANKIT_DATA, else ~/.cache/gankit)")
    vt.add_argument("--json", action="store_true", help="print one JSON object")
    vt.add_argument("--no-progress", dest="progress", action="store_false")


def add_serve_command(sub) -> None:
    w = sub.add_parser("serve", help="explore a trained run in the browser: samples, classes, latent walks",
                       description="Serve a local web page for a run: a grid of samples, new samples at a "
                       "click, a class picker for --conditional runs, and a slider along a latent walk. "
                       "Listens on 127.0.0.1 (this machine only) unless --host says otherwise.")
    w.add_argument("run", help="run folder (or a checkpoint file)")
    w.add_argument("--port", type=port_number, default=8000, help="default: 8000; 0 takes a free port")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; "
                   "0.0.0.0 lets other machines in)")
    w.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    add_sampling_settings(w)


def add_eval_nll_command(sub) -> None:
    e = sub.add_parser("eval-nll", help="a VAE run's test-set negative ELBO and IWAE bound, nats per image")
    e.add_argument("run", help="run folder of a vae or vae-mlp run")
    e.add_argument("--k", type=positive_int, default=1000, help="importance samples per image (default: 1000)")
    e.add_argument("--n", type=positive_int, help="test images to use (default: all)")
    e.add_argument("--seed", type=seed_number, default=0)
    e.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--no-progress", dest="progress", action="store_false")


def cmd_train(args: argparse.Namespace) -> None:
    given = vars(args).copy()
    given.pop("command")
    run = given.pop("resume", None)
    if run is None:
        train(TrainConfig(**given))
        return
    config, state = resume_with(Path(run), given)
    train(config, resume=state)


def cmd_sample(args: argparse.Namespace) -> None:
    if args.interpolate:
        cmd_sample_walk(args)
        return
    if args.steps:
        raise UserError("--steps applies to --interpolate only")
    if args.grid and args.out:
        raise UserError("give either --out (a .npz) or --grid (a .png), not both")
    target = Path(args.grid or args.out or "samples.npz")
    check_suffix(target, ".png" if args.grid else ".npz")
    if not target.parent.is_dir():
        raise UserError(f"folder '{target.parent}' does not exist; create it or pick another path")
    n = args.n or (64 if args.grid else 10000)
    config, task, _, native = load_run(Path(args.run), device=args.device, sampling=sampling_settings(args))
    sampling.check_label(task, args.label, args.run)
    images = sampling.generate(task, n, seed=args.seed, native=native, batch_size=args.batch_size,
                               label=args.label)
    try:
        if args.grid:
            sampling.save_grid(images, target)
        else:
            sampling.save_npz(images, target)
    except OSError as e:
        raise UserError(f"cannot write '{target}' ({e.strerror}); pick a writable path") from None
    shape = "x".join(map(str, images.shape[2:]))
    print(f"wrote {n} images ({shape}, {images.shape[1]} channel{'s' if images.shape[1] > 1 else ''}) to {target}")


def check_suffix(target: Path, suffix: str) -> None:
    """`sample` writes a .npz array with --out and a .png picture with --grid: a file named
    otherwise would hold one format under the other's name. A device or a pipe (/dev/null,
    /dev/stdout) takes the bytes whatever its name (files.write_atomic writes it in place)."""
    if target.exists() and not target.is_file() and not target.is_dir():
        return
    if target.suffix.lower() != suffix:
        other = "--grid NAME.png for a picture" if suffix == ".npz" else "--out NAME.npz for the array"
        flag = "--out" if suffix == ".npz" else "--grid"
        raise UserError(f"{flag} writes a {suffix} file, not '{target.name}'; give {flag} "
                        f"{target.with_suffix(suffix).name} (or {other})")


def cmd_sample_walk(args: argparse.Namespace) -> None:
    """`sample --interpolate`: walks from one random z to another, as a PNG grid and a GIF."""
    if args.grid:
        raise UserError("--interpolate writes a PNG and a GIF named by --out; drop --grid")
    target = Path(args.out or "walk.png")
    if target.suffix.lower() != ".png":
        raise UserError(f"--interpolate writes a PNG (and a GIF beside it); give --out {target.stem}.png")
    if not target.parent.is_dir():
        raise UserError(f"folder '{target.parent}' does not exist; create it or pick another path")
    rows, steps = args.n or 8, args.steps or 8
    sampling.check_walk(steps)  # before the run loads: a bad flag is said first
    _, task, _, native = load_run(Path(args.run), device=args.device, sampling=sampling_settings(args))
    sampling.check_label(task, args.label, args.run)
    images = sampling.walks(task, rows, steps, seed=args.seed, native=native, batch_size=args.batch_size,
                            label=args.label)
    gif = target.with_suffix(".gif")
    try:
        sampling.save_walks(images, rows, steps, target, gif)
    except OSError as e:
        raise UserError(f"cannot write '{target}' ({e.strerror}); pick a writable path") from None
    print(f"wrote {rows} walks of {steps} images to {target} and {gif}")


def cmd_export(args: argparse.Namespace) -> None:
    meta = export_run(Path(args.run), Path(args.out), args.format)
    size, native = meta["image_size"], meta["native_size"]
    note = f"; crop {meta['crop']} px a side for {native}x{native}" if meta["crop"] else ""
    labels = f" and labels 0..{meta['num_classes'] - 1}" if meta.get("num_classes") else ""
    if meta["inputs"][0] == "z":
        print(f"wrote the {meta['model']} generator (z {meta['nz']}{labels} -> {size}x{size} images in [-1, 1]"
              f"{note}) to {args.out}")
    else:  # a network that a solver drives: its inputs and output as the metadata says them
        print(f"wrote the {meta['model']} network ({', '.join(meta['inputs'])} -> {size}x{size} "
              f"{meta['output'].split(':')[0]}{note}) to {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:

    target = Path(args.target)
    judge = feature_judge(args.features)
    wants = {"dataset": args.dataset, "data_dir": args.data_dir, "reference": args.reference,
             "feature_weights": args.feature_weights, "device": args.device}
    if target.suffix == ".npz":
        if sampling_settings(args):
            raise UserError(f"{flag(next(iter(sampling_settings(args))))} applies to a run, which draws its "
                            "samples; a .npz holds them already")
        dataset = args.dataset or TrainConfig.dataset
        request = Request(**{**wants, "dataset": dataset}, seed=args.seed, progress=args.progress)
        result = judge_with(args.features, read_samples(target), request)
    else:
        loaded = load_run(target, device=args.device, sampling=sampling_settings(args))
        dataset = args.dataset or loaded.config.dataset
        result = judge_run(loaded, n=args.n, seed=args.seed, features=args.features, progress=args.progress, **wants)
    if args.json:
        print(json.dumps(result))
        return
    floor = result["floor"]
    print(judge.header(result, dataset))
    print(f"  {'metric':<18}{'samples':>12}{'real floor':>12}")
    for label, key, fmt in judge.rows:
        print(f"  {label:<18}{result[key]:>12{fmt}}{floor[key]:>12{fmt}}")
    print(judge.footer(result))
    if "sampling" in result:  # a run's samples, drawn here: how fast
        speed = result["sampling"]
        how = f" ({speed['how']})" if speed["how"] else ""
        print(f"sampling: {speed['images_per_second']:.1f} images/s on {speed['device']}{how}")


def read_samples(target: Path):
    """The images of a `gankit sample` .npz, uint8 (N, C, H, W); UserError when it is not one."""


    if not target.is_file():
        raise UserError(f"'{target}' does not exist; write one with `gankit sample RUN --out {target}`")
    try:
        array = np.load(target)["images"]
    except Exception as e:  # not a zip, no 'images', a pickle: all the same to the user
        raise UserError(f"'{target}' is not a gankit samples file ({type(e).__name__}); "
                        "it needs a uint8 array 'images'") from None
    return sampling.from_array(array, str(target))


def cmd_evaluator(args: argparse.Namespace) -> None:

    train = load_dataset(args.dataset, split="train", data_dir=args.data_dir)
    path = evaluator_path(train.images, train.labels, evaluator_cache())
    trained = not path.is_file()
    started = time.perf_counter()
    evaluator = evaluator_for(args.dataset, args.data_dir, args.progress, train=train)
    seconds = time.perf_counter() - started
    test = load_dataset(args.dataset, split="test", data_dir=args.data_dir)
    probs, _ = classify(evaluator, test.images)
    accuracy = (probs.argmax(1) == test.labels).float().mean().item()
    result = {"dataset": args.dataset, "path": str(path), "trained": trained, "seconds": round(seconds, 2),
              "test_accuracy": accuracy}
    if args.json:
        print(json.dumps(result))
        return
    how = f"trained in {seconds:.0f} s" if trained else "already cached"
    print(f"{args.dataset} evaluator ({how}): test accuracy {100 * accuracy:.2f} %, at {path}")


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        serve(Path(args.run), host=args.host, port=args.port, device=args.device,
              settings=sampling_settings(args))
    except KeyboardInterrupt:  # Ctrl+C before it served (while serving, werkzeug takes it and returns)
        pass
    print("stopped", file=sys.stderr)  # Ctrl+C is how a server stops: exit 0


def cmd_eval_nll(args: argparse.Namespace) -> None:

    result = evaluate_nll(Path(args.run), k=args.k, n=args.n, seed=args.seed, device=args.device,
                          progress=args.progress)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']} at step {result['step']}, {result['images']} test images, nats per image:")
    print(f"  negative ELBO       {result['neg_elbo']:9.2f}   "
          f"(reconstruction {result['recon']:.2f} + KL {result['kl']:.2f})")
    print(f"  IWAE bound, k={args.k:<5} {result['iwae_nll']:9.2f}   (an upper bound on -log p(x))")


def main(argv: list[str] | None = None) -> int:
    # Under torchrun every rank meets the same errors; rank 0 alone says them.
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        {"train": cmd_train, "sample": cmd_sample, "export": cmd_export, "eval": cmd_eval,
         "eval-nll": cmd_eval_nll, "evaluator": cmd_evaluator, "serve": cmd_serve}[args.command](args)
    except GankitError as e:  # UserError 2, Diverged 3, Stopped 128 + signal
        say(f"{e.prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        say("aborted; the last checkpoint is untouched", file=sys.stderr)
        return 130
    return 0
