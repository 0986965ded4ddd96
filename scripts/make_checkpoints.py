"""Train the checkpoints shipped in checkpoints/: one per registry model, on the
built-in digits (table models: the built-in breast-cancer table), CPU, seeded.

    python scripts/make_checkpoints.py            # every registry model, a few minutes on 2 cores
    python scripts/make_checkpoints.py vae ae     # just these
    python scripts/make_checkpoints.py sprites_beta_vae   # one of EXTRA, by its checkpoint name

Each is `python -m vae_explorer train --model NAME` with the model's preset, the
common flags below and the registry entry's `shipped` settings (which win), followed by
dropping the optimizer state (not needed to explore, triples the file size).
A new registry model gets its shipped checkpoint here with no change.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer.checkpoints import load_checkpoint, read_metadata, save_checkpoint  # noqa: E402
from vae_explorer.cli import main as cli  # noqa: E402
from vae_explorer.models import MODELS, load_plugins, shipped_checkpoint  # noqa: E402
from vae_explorer.runs import flag_words  # noqa: E402

# Checkpoints beyond one per registry model: name -> (model, settings that replace COMMON's). A β-VAE on
# sprites, whose known factors the Diagnostics tab's disentanglement scorecard needs: 0.5 MB, about a minute.
EXTRA = {
    "sprites_beta_vae": ("beta_vae", ["--dataset", "sprites", "--epochs", "20", "--latent-dim", "6", "--hidden", "64",
                                      "--iwae-k", "0"]),
}

COMMON = ["--dataset", "digits", "--epochs", "150", "--batch-size", "64", "--seed", "0", "--device", "cpu",
          "--precision", "fp32", "--iwae-k", "100", "--quiet"]


def strip_train_state(path: Path) -> None:
    meta = read_metadata(path)
    meta.pop("train_state", None)
    model, _ = load_checkpoint(path)
    save_checkpoint(path, model, meta)


def main(names: list[str]) -> None:
    load_plugins()
    for name in names or [*MODELS, *EXTRA]:
        if name in EXTRA:  # later flags win: the extra settings replace COMMON's
            model, settings = EXTRA[name]
            out = ROOT / "checkpoints" / name
        else:
            model, out = name, ROOT / "checkpoints" / shipped_checkpoint(name)
            settings = [word for setting, value in MODELS[name].shipped.items() for word in flag_words(setting, value)]
        code = cli(["train", "--model", model, *COMMON, *settings, "--out", str(out)])
        if code:
            sys.exit(f"training {name} failed")
        strip_train_state(out.with_suffix(".safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
