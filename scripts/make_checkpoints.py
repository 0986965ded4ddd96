"""Train the checkpoints shipped in checkpoints/: one per registry model, on the
built-in digits (table models: the built-in breast-cancer table), CPU, seeded.

    python scripts/make_checkpoints.py            # every registry model, a few minutes on 2 cores
    python scripts/make_checkpoints.py vae ae     # just these
    python scripts/make_checkpoints.py sprites_beta_vae   # one of EXTRA, by its checkpoint name
    python scripts/make_checkpoints.py --only mnist --data-root ../shared/datasets   # the MNIST set, ~15 min idle

Each is `python -m vae_explorer train --model NAME` with the model's preset, the
common flags below and the registry entry's `shipped` settings (which win), followed by
dropping the optimizer state (not needed to explore, triples the file size).
A new registry model gets its shipped checkpoint here with no change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer.checkpoints import load_checkpoint, load_motion, read_metadata, save_checkpoint  # noqa: E402
from vae_explorer.cli import main as cli  # noqa: E402
from vae_explorer.models import MODELS, load_plugins, shipped_checkpoint  # noqa: E402
from vae_explorer.runs import flag_words  # noqa: E402

# Checkpoints beyond one per registry model: name -> (model, settings that replace COMMON's). A β-VAE on
# sprites, whose known factors the Diagnostics tab's disentanglement scorecard needs: 0.5 MB, about a minute.
EXTRA = {
    "sprites_beta_vae": ("beta_vae", ["--dataset", "sprites", "--epochs", "20", "--latent-dim", "6", "--hidden", "64",
                                      "--iwae-k", "0"]),
}

# The MNIST set (train with --data-root: the folder that holds MNIST/raw/). The canonical side-by-side map is
# mnist_ae_2d against mnist_vae_2d. Epochs sized for about 15 minutes on an idle 2-core machine (an MLP epoch
# of 60,000 images takes 2-3 s there, the small conv VAE's about 20 s).
# One hidden layer of 128 keeps each MLP file under 1 MB (a 784x256 layer is 0.8 MB alone).
MNIST_COMMON = ["--dataset", "mnist", "--batch-size", "256", "--hidden", "128", "--iwae-k", "20"]
MNIST = {
    "mnist_ae_2d": ("ae", [*MNIST_COMMON, "--latent-dim", "2", "--epochs", "60"]),
    "mnist_vae_2d": ("vae", [*MNIST_COMMON, "--latent-dim", "2", "--epochs", "60"]),
    "mnist_denoising_ae": ("denoising_ae", [*MNIST_COMMON, "--latent-dim", "16", "--epochs", "30"]),
    "mnist_vq_vae": ("vq_vae", [*MNIST_COMMON, "--epochs", "30"]),
    "mnist_conv_vae": ("conv_vae", [*MNIST_COMMON, "--latent-dim", "16", "--channels", "16,32", "--epochs", "20"]),
}
SETS = {"mnist": MNIST}  # --only NAME: one of these sets

COMMON = ["--dataset", "digits", "--epochs", "150", "--batch-size", "64", "--seed", "0", "--device", "cpu",
          "--precision", "fp32", "--iwae-k", "100", "--quiet"]


def strip_train_state(path: Path) -> None:
    meta = read_metadata(path)
    meta.pop("train_state", None)
    # The folder it was trained from is this machine's; a shipped checkpoint finds its data under the
    # explorer's --data-root instead.
    if meta.get("dataset", {}).get("root") is not None:
        meta["dataset"]["root"] = None
    model, _ = load_checkpoint(path)
    # The map after each epoch stays (the Diagnostics tab plays it); only the optimizer and RNG state go.
    save_checkpoint(path, model, meta, motion=load_motion(path))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registry models or checkpoint names (default: every registry "
                        "model and the digits/sprites extras)")
    parser.add_argument("--only", choices=sorted(SETS), help="train this set of checkpoints (e.g. mnist)")
    parser.add_argument("--data-root", help="folder holding the set's dataset (MNIST: the folder with MNIST/raw/)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints "
                        "(exactly: the optimizer and random states are saved each epoch)")
    args = parser.parse_args(argv)
    extra = {**EXTRA, **MNIST}
    names = args.names or (list(SETS[args.only]) if args.only else [*MODELS, *EXTRA])
    data_root = ["--data-root", str(Path(args.data_root).expanduser().resolve())] if args.data_root else []
    load_plugins()
    for name in names:
        if name in extra:  # later flags win: the extra settings replace COMMON's
            model, settings = extra[name]
            settings = [*settings, *data_root] if name in MNIST else settings
            out = ROOT / "checkpoints" / name
        else:
            model, out = name, ROOT / "checkpoints" / shipped_checkpoint(name)
            settings = [word for setting, value in MODELS[name].shipped.items() for word in flag_words(setting, value)]
        code = cli(["train", "--model", model, *COMMON, *settings, "--out", str(out), *(["--resume"] * args.resume)])
        if code:
            sys.exit(f"training {name} failed")
        strip_train_state(out.with_suffix(".safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
