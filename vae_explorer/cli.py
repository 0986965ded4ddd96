"""Command line: `python -m vae_explorer {models,train,eval,sample,export}`.

`train` has a flag for every field of a run (runs.py generates them from the
config dataclasses). Every argument is checked before any work starts, and so
is the memory the run would need (--memory-limit); a bad one gets one line on
stderr and exit code 2. `train --events` prints one JSON
`TrainEvent` per line instead of a progress bar: the server's background job
reads those.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import threading
import time

import torch
import torch.distributed as dist

from .checkpoints import CheckpointError, checkpoint_path, find_checkpoint, load_checkpoint
from .data import DATA_KINDS, DatasetError, load_dataset_for
from .devices import resolve_device
from .anomaly import THRESHOLD_RULES, choose_threshold, detection_report
from .latent import reconstruction_errors
from .metrics import evaluate
from .models import MODELS, build_model, load_plugins
from .runs import RunError, add_flags, spec_from_args
from .training import TrainEvent, TrainingError, fit

EXIT_USAGE = 2
EVENT_INTERVAL = 0.25  # seconds between step events on --events (epoch events always go)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of argparse's usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m vae_explorer", description="Train, evaluate and sample autoencoders and VAEs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    m = sub.add_parser("models", help="list the registry's model names, one per line")
    m.add_argument("--describe", action="store_true", help="with a one-line description of each")

    t = sub.add_parser("train", help="train a model; writes a checkpoint after every epoch")
    add_flags(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--events", action="store_true", help="print one JSON training event per line (for programs)")

    e = sub.add_parser("eval", help="test-set metrics of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="a checkpoint path or name, with or without .safetensors")
    e.add_argument("--data-root", default=None, help="where the checkpoint's dataset lives")
    e.add_argument("--iwae-k", type=int, default=100, help="importance samples for nll_iwae (models with a bound)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--threshold", default="percentile:95", metavar="RULE[:LEVEL]",
                   help="where labels mark anomalies: the anomaly threshold for precision/recall/F1; "
                        f"rules {', '.join(THRESHOLD_RULES)} (e.g. percentile:80 flags the top 20%%, fpr:0.05, "
                        "iqr:1.5, mad:3.5)")

    s = sub.add_parser("sample", help="a grid decoded from random codes")
    s.add_argument("--checkpoint", required=True, help="a checkpoint path or name, with or without .safetensors")
    s.add_argument("-n", type=int, default=49, help="number of items (a square grid when n is a square)")
    s.add_argument("--out", default="samples.png")
    s.add_argument("--source", default=None, help="how to draw codes (default: the model's own way; "
                                                  "see the model's sample sources)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=int, default=4, help="pixel upscaling of the saved grid")

    x = sub.add_parser("export", help="a checkpoint's test codes (CSV, Embedding Projector files) or its run bundle")
    x.add_argument("what", choices=("codes", "projector", "bundle"),
                   help="codes: CSV of the test codes with labels; projector: a zip of TensorBoard's Embedding "
                        "Projector files (tensors.tsv, metadata.tsv, sprite.png, projector_config.pbtxt); bundle: "
                        "a zip of the checkpoint, its description, metrics and the command that trains it again")
    x.add_argument("--checkpoint", required=True, help="a checkpoint path or name, with or without .safetensors")
    x.add_argument("--out", required=True, help="the file to write (.csv for codes, .zip otherwise)")
    x.add_argument("--data-root", default=None, help="where the checkpoint's dataset lives (codes, projector)")
    return p


def _setup_distributed(device_flag: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns (rank, device flag)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, device_flag
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_flag in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), (f"cuda:{local_rank}" if use_cuda else ("cpu" if device_flag == "auto" else device_flag))


def _print_event(event: TrainEvent) -> None:
    sys.stdout.write(json.dumps(event.to_dict()) + "\n")
    sys.stdout.flush()


def _event_printer():
    """fit's callback for --events: every event but steps closer than EVENT_INTERVAL (small datasets
    make many steps a second; a page needs a few)."""
    last = [0.0]

    def callback(event: TrainEvent) -> None:
        now = time.perf_counter()
        if event.kind == "step" and now - last[0] < EVENT_INTERVAL:
            return
        last[0] = now
        _print_event(event)

    return callback


def _progress_bar(model_name: str, data, n_params: int, epochs: int):
    from tqdm import tqdm  # only for people at a terminal

    print(f"{model_name} on {data.name} {data.item_shape}: {len(data.train_x)} train / "
          f"{len(data.test_x)} test items, {n_params:,} parameters", file=sys.stderr)
    bar = tqdm(total=epochs, unit="epoch", dynamic_ncols=True, file=sys.stderr)

    def callback(ev: TrainEvent) -> None:
        if ev.kind == "step":
            bar.set_description(f"epoch {ev.epoch}/{ev.epochs} step {ev.step}/{ev.steps_per_epoch}")
            bar.set_postfix(loss=f"{ev.train['loss']:.2f}", img_s=f"{ev.images_per_s:,.0f}", device=ev.device)
        elif ev.kind == "epoch":
            bar.update(1)
            terms = " ".join(f"{k}={v:.3f}" for k, v in ev.test.items() if k in ("loss", "recon", "kl", "nll_iwae"))
            bar.write(f"epoch {ev.epoch}: train loss {ev.train['loss']:.3f} | test {terms} | {ev.images_per_s:,.0f} img/s")

    return callback, bar


# Set by a page server (server/jobs.py): the descriptor of its locked training lock file, inherited. Closed as the
# run ends, before "done" is printed, so the machine is free the moment any page shows the run finished (the
# interpreter's own exit takes another second or two).
LOCK_FD_ENV = "VAE_EXPLORER_TRAIN_LOCK_FD"


def _release_training_lock() -> None:
    fd = os.environ.pop(LOCK_FD_ENV, "")
    if fd.isdigit():
        try:
            os.close(int(fd))
        except OSError:
            pass


def cmd_train(args) -> int:
    spec = spec_from_args(args)
    try:
        spec.validate()  # everything that needs no data, before anything starts
        rank, spec.train.device = _setup_distributed(spec.train.device)
        data = spec.load_data()
        config = spec.model_config(data)
        spec.check_memory(data)  # the parameters, optimizer state, activations and data fit, before building
    except RunError as e:
        raise UsageError(str(e)) from None
    spec.train.checkpoint = spec.checkpoint()
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, config)

    stop = threading.Event()  # SIGTERM (the page's Cancel) stops after the current step; the checkpoint stays
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bar = None
    if rank != 0 or (args.quiet and not args.events):
        callback = None
    elif args.events:
        callback = _event_printer()
    else:
        callback, bar = _progress_bar(spec.model, data, sum(p.numel() for p in model.parameters()), spec.train.epochs)

    t0 = time.perf_counter()
    dataset_info = {"root": os.path.abspath(spec.data.data_root) if spec.data.data_root else None,
                    **({"image_size": spec.data.image_size, "channels": spec.data.image_channels}
                       if spec.data.kind() == "image" else {})}
    try:
        result = fit(model, data, spec.train, callback=callback, stop=stop, resume=spec.resume,
                     dataset_info=dataset_info)
    except (TrainingError, torch.cuda.OutOfMemoryError) as e:
        message = ("the GPU ran out of memory: lower the batch size or pick the CPU"
                   if isinstance(e, torch.cuda.OutOfMemoryError) else str(e))
        _release_training_lock()
        if args.events:
            _print_event(TrainEvent("error", message=message))
        print(f"training stopped: {message}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return 0
    _release_training_lock()
    if args.events:
        _print_event(TrainEvent("done", stopped=result.stopped, epoch=len(result.history),
                                checkpoint=str(checkpoint_path(spec.train.checkpoint))))
    elif result.history:
        last = result.history[-1]
        print(json.dumps({
            "model": spec.model, "dataset": data.name, "epochs": last["epoch"], "device": result.device,
            "seconds": round(time.perf_counter() - t0, 2),
            "images_per_s_median": statistics.median(h["images_per_s"] for h in result.history),
            "test": last["test"], "checkpoint": str(checkpoint_path(spec.train.checkpoint)),
        }, indent=None if args.quiet else 2))
    return 0


def _load(name, device_flag):
    try:
        return load_checkpoint(find_checkpoint(name), resolve_device(device_flag))
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None


def cmd_eval(args) -> int:
    if args.iwae_k < 0:
        raise UsageError(f"--iwae-k must be >= 0, got {args.iwae_k}")
    model, meta = _load(args.checkpoint, args.device)
    try:
        data = load_dataset_for(meta, args.data_root)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    torch.manual_seed(args.seed)
    device = next(model.parameters()).device
    metrics = evaluate(model, data.test_x.to(device), data.kind, iwae_k=args.iwae_k)
    result = {"checkpoint": str(args.checkpoint), "model": meta["model"], "dataset": data.name,
              f"test_{data.kind.item}s": len(data.test_x), **metrics}
    if data.anomaly_classes:  # labels say which items are anomalies: how well the scores find them
        rule, _, level = args.threshold.partition(":")
        scores = reconstruction_errors(model, data.test_x.to(device), data.kind)
        truth = data.is_anomaly(data.test_y)
        try:
            threshold = choose_threshold(scores, rule, float(level) if level else None, scores[~truth])
        except ValueError as e:
            raise UsageError(f"--threshold: {e}") from None
        report = detection_report(scores, truth, threshold.value)
        result.update({"threshold_rule": threshold.explanation,
                       **{k: v for k, v in report.items() if k not in ("items",)}})
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")
    return 0


def cmd_sample(args) -> int:
    if args.n < 1 or args.scale < 1 or not args.temperature > 0:
        raise UsageError("-n and --scale must be >= 1 and --temperature > 0")
    model, _ = _load(args.checkpoint, "cpu")
    sources = {s.name: s for s in model.sample_sources()}
    source = sources.get(args.source or next(iter(sources)))
    if source is None:
        raise UsageError(f"--source {args.source!r}: {model.name} samples from {', '.join(sources)}")
    if source.name == "fitted":
        raise UsageError("--source fitted needs the model's codes: use the explorer's Sample tab")
    generator = torch.Generator().manual_seed(args.seed)
    items = model.sample(args.n, source.name, temperature=args.temperature, generator=generator)
    grid = DATA_KINDS[model.data_kind].grid(items.float().clamp(0, 1), nrow=math.ceil(math.sqrt(args.n)),
                                            target=items.shape[-2] * args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.save(args.out)
    note = "" if source.generative else f" ({source.label}: not real samples of a generative model)"
    print(f"wrote {args.out}: {args.n} samples from {args.checkpoint}{note}")
    return 0


def cmd_export(args) -> int:
    from . import export
    from .cards import model_card

    model, meta = _load(args.checkpoint, "cpu")
    path = find_checkpoint(args.checkpoint)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if args.what == "bundle":
        files = export.run_bundle(path, model_card(path.stem, model, meta, MODELS.get(meta["model"])))
        content, note = export.zip_files(files), f"{', '.join(files)}"
    else:
        try:
            data = load_dataset_for(meta, args.data_root)
        except DatasetError as e:
            raise UsageError(str(e)) from None
        codes = export.test_codes(model, data)
        names = export.label_names(data)
        if args.what == "codes":
            content = export.codes_csv(codes, data.test_y.numpy(), names).encode()
        else:
            files = export.projector_files(codes, data.test_y.numpy(), names, export.thumbnails(data), path.stem)
            content = export.zip_files(files, path.stem)
        note = f"{len(codes):,} test codes of {codes.shape[1]} dimensions"
    with open(out, "wb") as f:
        f.write(content)
    print(f"wrote {args.out}: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    load_plugins()  # models registered outside the package get their flags too
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.command == "models":
            width = max(map(len, MODELS))
            print("\n".join(f"{name:<{width}}  {entry.description}" if args.describe else name
                            for name, entry in MODELS.items()))
            return 0
        return {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
                "export": cmd_export}[args.command](args)
    except UsageError as e:
        if getattr(args, "events", False):  # a program reading events gets the refusal as one
            _print_event(TrainEvent("error", message=str(e)))
        print(f"vae_explorer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
