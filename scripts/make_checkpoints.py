"""Train the checkpoints shipped in checkpoints/ (built-in digits, CPU, seeded).

    python scripts/make_checkpoints.py            # all of them, about two minutes on 2 cores
    python scripts/make_checkpoints.py vae ae     # just these

Each is `python -m vae_explorer train ...` followed by dropping the optimizer
state (not needed to explore, triples the file size).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer.checkpoints import load_checkpoint, read_metadata, save_checkpoint  # noqa: E402
from vae_explorer.cli import main as cli  # noqa: E402

# name -> extra train flags. Latent sizes: 2-D where the explorer's maps want the raw plane.
SHIPPED = {
    "ae": ["--latent-dim", "2"],
    "vae": ["--latent-dim", "2"],
    "beta_vae": ["--latent-dim", "2"],
    "linear_ae": ["--latent-dim", "2", "--lr", "3e-3"],
    "conv_ae": ["--latent-dim", "8"],
    "conv_vae": ["--latent-dim", "8"],
    "sparse_ae": ["--latent-dim", "128"],
    "denoising_ae": ["--latent-dim", "16", "--noise-std", "0.5"],
    "vq_vae": ["--latent-dim", "16"],
    "rvq_vae": ["--latent-dim", "16"],
}
COMMON = ["--dataset", "digits", "--epochs", "150", "--batch-size", "64", "--seed", "0", "--device", "cpu",
          "--precision", "fp32", "--iwae-k", "100", "--quiet"]


def strip_train_state(path: Path) -> None:
    meta = read_metadata(path)
    meta.pop("train_state", None)
    model, _ = load_checkpoint(path)
    save_checkpoint(path, model, meta)


def main(names: list[str]) -> None:
    for name in names or SHIPPED:
        out = ROOT / "checkpoints" / f"digits_{name}"
        code = cli(["train", "--model", name, *SHIPPED[name], *COMMON, "--out", str(out)])
        if code:
            sys.exit(f"training {name} failed")
        strip_train_state(out.with_suffix(".safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
