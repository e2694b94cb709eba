"""VAE anchor: the classic MLP VAE against gankit's conv VAE on MNIST. Prints JSON lines.

For each model: train for --epochs (skipped when the run folder already has them),
then the test set's negative ELBO and the IWAE bound with --k samples, nats per image.
The classic PyTorch example (examples/vae) reports a test loss of about 105.5 after
10 epochs; `vae-mlp` is that model and should land within 1.5 nats of it.

  python benchmarks/vae.py --data-dir DIR --epochs 10 --k 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from gankit.config import TrainConfig  # noqa: E402
from gankit.runs import resume_state  # noqa: E402
from gankit.training.loop import train  # noqa: E402
from gankit.training.nll import evaluate_nll  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--runs", nargs="*", default=["vae-mlp:20", "vae:16", "vae:32", "vae:64"],
                   help="model:latent_dim pairs")
    p.add_argument("--out", default="runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                   help="training precision (default fp32: the README's VAE table was measured in fp32)")
    args = p.parse_args()
    for spec in args.runs:
        model, latent = spec.split(":")
        run = Path(args.out) / (f"{model}-seed{args.seed}" if model == "vae-mlp" else f"vae-l{latent}-seed{args.seed}")
        if (run / "checkpoints" / "last.pt").exists():
            config, state = resume_state(run)
            config.epochs, config.progress = args.epochs, False
            train(config, resume=state)
        else:
            train(TrainConfig(model=model, latent_dim=int(latent), dataset="mnist", data_dir=args.data_dir,
                              epochs=args.epochs, seed=args.seed, out=str(run), progress=False,
                              precision=args.precision))
        lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        started = time.perf_counter()
        result = evaluate_nll(run, k=args.k, progress=False)
        print(json.dumps({
            "model": model, "latent_dim": int(latent), "epochs": lines[-1]["epoch"],
            "test_neg_elbo_epoch_end": round(lines[-1]["test_neg_elbo"], 2),
            "neg_elbo": round(result["neg_elbo"], 2), "recon": round(result["recon"], 2), "kl": round(result["kl"], 2),
            f"iwae_nll_k{args.k}": round(result["iwae_nll"], 2),
            "train_seconds": round(sum(ln["seconds"] for ln in lines), 1),
            "eval_seconds": round(time.perf_counter() - started, 1),
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
