"""Command line: `python -m vae_explorer {models,train,eval,sample}`.

Every argument is checked before any work starts; a bad one gets one line on
stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import fields
from datetime import datetime

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of argparse's usage dump
        raise UsageError(message)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .models import LIKELIHOODS, MODELS
    from .training import PRECISIONS

    p = _Parser(prog="python -m vae_explorer", description="Train, evaluate and sample autoencoders and VAEs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the registry's model names, one per line")

    t = sub.add_parser("train", help="train a model; writes a checkpoint after every epoch")
    t.add_argument("--model", default="vae", help=f"one of: {', '.join(MODELS)}")
    t.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS)}")
    t.add_argument("--data-root", default=None, help="folder with the torchvision datasets, or the image folder")
    t.add_argument("--image-size", type=int, default=None, help="resize images to this square size")
    t.add_argument("--grayscale", action="store_true", help="convert images to one channel")
    t.add_argument("--rgb", action="store_true", help="convert images to three channels")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--latent-dim", type=int, default=None, help="code size (default: the model's preset)")
    t.add_argument("--hidden", type=_int_list, default=None, help="MLP widths, e.g. 400 or 512,256")
    t.add_argument("--conv-channels", type=_int_list, default=None, help="conv channels, e.g. 32,64")
    t.add_argument("--likelihood", choices=LIKELIHOODS, default=None)
    t.add_argument("--sigma", type=float, default=None, help="scale of the gaussian / laplace likelihood")
    t.add_argument("--beta", type=float, default=None, help="KL weight (VAEs)")
    t.add_argument("--noise-std", type=float, default=None, help="Gaussian noise factor (denoising AE)")
    t.add_argument("--mask-prob", type=float, default=None, help="fraction of pixels zeroed (denoising AE)")
    t.add_argument("--l1", type=float, default=None, help="L1 weight on the code (sparse AE)")
    t.add_argument("--codebook-size", type=int, default=None, help="codes per level (VQ models)")
    t.add_argument("--code-dim", type=int, default=None, help="size of one code vector (VQ models)")
    t.add_argument("--levels", type=int, default=None, help="residual quantization levels (VQ models)")
    t.add_argument("--codebook-update", choices=("loss", "ema"), default=None,
                   help="codebooks learn by gradient (loss) or as moving averages of encoder outputs (ema; VQ models)")
    t.add_argument("--ema-decay", type=float, default=None, help="decay of the ema codebook update, in (0, 1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    t.add_argument("--precision", choices=PRECISIONS, default="auto")
    t.add_argument("--compile", action="store_true", help="torch.compile the forward pass (faster after a warm-up)")
    t.add_argument("--iwae-k", type=int, default=16, help="importance samples for the per-epoch IWAE (VAEs)")
    t.add_argument("--out", default=None, help="checkpoint path (default: checkpoints/MODEL_DATASET_TIME)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="test-set metrics of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data-root", default=None, help="where the checkpoint's dataset lives")
    e.add_argument("--iwae-k", type=int, default=100, help="importance samples for nll_iwae (VAEs)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    s = sub.add_parser("sample", help="a grid of images decoded from random codes")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("-n", type=int, default=49, help="number of images (a square grid when n is a square)")
    s.add_argument("--out", default="samples.png")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=int, default=4, help="pixel upscaling of the saved grid")
    return p


# Which model-config field each train flag sets.
_CONFIG_FLAGS = {
    "latent_dim": "latent_dim", "hidden": "hidden", "conv_channels": "channels", "likelihood": "likelihood",
    "sigma": "sigma", "beta": "beta", "noise_std": "noise_std", "mask_prob": "mask_prob", "l1": "l1_weight",
    "codebook_size": "codebook_size", "code_dim": "code_dim", "levels": "levels",
    "codebook_update": "codebook_update", "ema_decay": "ema_decay",
}


def _model_overrides(args, model_name: str, input_shape) -> dict:
    from .models import MODELS, model_config

    if model_name not in MODELS:
        raise UsageError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    valid = {f.name for f in fields(type(MODELS[model_name][1]))}
    overrides = {"input_shape": input_shape}
    for flag, name in _CONFIG_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if name not in valid:
            raise UsageError(f"--{flag.replace('_', '-')} does not apply to model {model_name}")
        overrides[name] = value
    try:
        config = model_config(model_name, **overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.ema_decay is not None and config.codebook_update != "ema":  # it would be silently ignored
        raise UsageError("--ema-decay applies only with --codebook-update ema")
    return config


def _setup_distributed(device_flag: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns (rank, device flag)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, device_flag
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_flag in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), (f"cuda:{local_rank}" if use_cuda else ("cpu" if device_flag == "auto" else device_flag))


def cmd_train(args) -> int:
    import torch

    from .checkpoints import checkpoint_path
    from .data import DATASETS, DatasetError, load_dataset
    from .models import build_model
    from .training import TrainConfig, TrainingError, fit

    # Everything that can be checked without data is checked first.
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; choose one of: {', '.join(DATASETS)}")
    if args.grayscale and args.rgb:
        raise UsageError("--grayscale and --rgb exclude each other")
    if args.image_size is not None and args.image_size < 1:
        raise UsageError(f"--image-size must be positive, got {args.image_size}")
    _model_overrides(args, args.model, (1, 8, 8))  # flags valid for this model, values in range
    out = args.out or os.path.join("checkpoints", f"{args.model}_{args.dataset}_{datetime.now():%Y%m%d-%H%M%S}")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device, precision=args.precision, iwae_k=args.iwae_k, checkpoint=out,
                         compile=args.compile)
    try:
        config.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    rank, config.device = _setup_distributed(args.device)
    channels = 1 if args.grayscale else 3 if args.rgb else None
    try:
        data = load_dataset(args.dataset, args.data_root, args.image_size, channels)
        config.validate(data)
    except (DatasetError, ValueError) as e:
        raise UsageError(str(e)) from None
    model_cfg = _model_overrides(args, args.model, data.input_shape)
    torch.manual_seed(args.seed)
    model = build_model(args.model, model_cfg)
    n_params = sum(p.numel() for p in model.parameters())

    bar = None
    if rank == 0 and not args.quiet:
        from tqdm import tqdm

        print(f"{args.model} on {data.name} {tuple(data.input_shape)}: {len(data.train_x)} train / "
              f"{len(data.test_x)} test images, {n_params:,} parameters", file=sys.stderr)
        bar = tqdm(total=args.epochs, unit="epoch", dynamic_ncols=True, file=sys.stderr)

    def progress(ev):
        if bar is None:
            return
        if ev.kind == "step":
            bar.set_description(f"epoch {ev.epoch}/{ev.epochs} step {ev.step}/{ev.steps_per_epoch}")
            bar.set_postfix(loss=f"{ev.train['loss']:.2f}", img_s=f"{ev.images_per_s:,.0f}", device=ev.device)
        else:
            bar.update(1)
            terms = " ".join(f"{k}={v:.3f}" for k, v in ev.test.items() if k in ("loss", "recon", "kl", "nll_iwae"))
            bar.write(f"epoch {ev.epoch}: train loss {ev.train['loss']:.3f} | test {terms} | {ev.images_per_s:,.0f} img/s")

    t0 = time.perf_counter()
    dataset_info = {"root": os.path.abspath(args.data_root) if args.data_root else None,
                    "image_size": args.image_size, "channels": channels}
    try:
        result = fit(model, data, config, callback=progress, resume=args.resume, dataset_info=dataset_info)
    except TrainingError as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if rank == 0 and result.history:
        last = result.history[-1]
        speeds = [h["images_per_s"] for h in result.history]
        print(json.dumps({
            "model": args.model, "dataset": data.name, "epochs": last["epoch"], "device": result.device,
            "seconds": round(time.perf_counter() - t0, 2), "images_per_s_median": statistics.median(speeds),
            "test": last["test"], "checkpoint": str(checkpoint_path(config.checkpoint)),
        }, indent=None if args.quiet else 2))
    return 0


def _load(path, device_flag):
    from .checkpoints import CheckpointError, load_checkpoint
    from .training import resolve_device

    try:
        device = resolve_device(device_flag)
        return load_checkpoint(path, device)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None


def cmd_eval(args) -> int:
    import torch

    from .data import DatasetError, load_dataset_for
    from .metrics import evaluate

    if args.iwae_k < 0:
        raise UsageError(f"--iwae-k must be >= 0, got {args.iwae_k}")
    model, meta = _load(args.checkpoint, args.device)
    try:
        data = load_dataset_for(meta, args.data_root)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    torch.manual_seed(args.seed)
    device = next(model.parameters()).device
    metrics = evaluate(model, data.test_x.to(device), iwae_k=args.iwae_k)
    result = {"checkpoint": str(args.checkpoint), "model": meta["model"], "dataset": data.name,
              "test_images": len(data.test_x), **metrics}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")
    return 0


def cmd_sample(args) -> int:
    import math

    import torch

    from .images import image_grid

    if args.n < 1 or args.scale < 1 or args.temperature <= 0:
        raise UsageError("-n and --scale must be >= 1 and --temperature > 0")
    model, _ = _load(args.checkpoint, "cpu")
    generator = torch.Generator().manual_seed(args.seed)
    images = model.sample(args.n, temperature=args.temperature, generator=generator)
    grid = image_grid(images, nrow=math.ceil(math.sqrt(args.n)), scale=args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.save(args.out)
    note = "" if model.can_sample else " (a deterministic AE has no prior: these decodes of N(0, I) are not real samples)"
    print(f"wrote {args.out}: {args.n} samples from {args.checkpoint}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "models":
            from .models import MODELS

            print("\n".join(MODELS))
            return 0
        return {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample}[args.command](args)
    except UsageError as e:
        print(f"vae_explorer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
