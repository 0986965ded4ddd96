"""Precompute the UMAP map of every checkpoint, so the shipped checkpoints ship their projections.

For each checkpoint in the folder this encodes its test set (the codes the
Latent map tab shows), fits UMAP with the app's own `umap_fit`, and writes the
(N, 2) float32 embedding to the file the app reads first,
`Explorer(folder).umap.cache_file(entry.key)` = <folder>/projections/<key>.<settings tag>.npy.
The key changes whenever a checkpoint's contents change, so a stale file is
never used; rerun this after retraining a shipped checkpoint. Existing files
of the right shape are kept unless --force.

    python scripts/make_projections.py                    # every checkpoint in checkpoints/
    python scripts/make_projections.py digits_vae --force
    python scripts/make_projections.py --data-root ../shared/datasets   # also MNIST/CIFAR checkpoints
    python scripts/make_projections.py --prune            # also delete files no checkpoint uses any more

Checkpoints whose dataset cannot be loaded (MNIST without --data-root) are
skipped with a message. At the end every file is read back through the app's
`UmapProjector.get`, which must return it without starting a UMAP worker.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="checkpoint names (default: all in the folder)")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--data-root", default=None, help="where mnist / fashion_mnist / cifar10 live")
    p.add_argument("--force", action="store_true", help="recompute files that exist already")
    p.add_argument("--prune", action="store_true",
                   help="delete projection files no checkpoint uses (also those of older UMAP settings)")
    p.add_argument("--seed", type=int, default=0, help="UMAP random_state (the app uses 0)")
    args = p.parse_args(argv)

    import numpy as np

    from vae_explorer.server import Explorer, ViewError
    from vae_explorer.server.umap_worker import umap_fit

    ex = Explorer(args.checkpoints, args.data_root)
    names = args.names or ex.checkpoint_names()
    if not names:
        print(f"no checkpoints in {args.checkpoints}")
        return 1
    failures, used_keys, written = 0, set(), []
    for name in names:
        try:
            entry = ex.load(name)
            path = ex.umap.cache_file(entry.key)
            used_keys.add(entry.key)
            t0 = time.perf_counter()
            codes = entry.codes
        except (ViewError, ValueError) as e:
            print(f"{name:<24} skipped: {e}")
            failures += 1
            continue
        if path.is_file() and not args.force:
            try:
                if np.load(path, allow_pickle=False).shape == (len(codes), 2):
                    print(f"{name:<24} up to date: {path.relative_to(ex.catalog.root)}")
                    continue
            except (OSError, ValueError):
                pass  # damaged: compute again
        emb = umap_fit(codes, seed=args.seed)
        if emb.shape != (len(codes), 2) or not np.isfinite(emb).all():
            print(f"{name:<24} FAILED: embedding of shape {emb.shape}, finite: {np.isfinite(emb).all()}")
            failures += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, emb.astype(np.float32))
        os.replace(tmp, path)
        written.append((name, entry.key, codes))
        print(f"{name:<24} {codes.shape[0]:>6} × {codes.shape[1]:<3} -> {path.relative_to(ex.catalog.root)} "
              f"({path.stat().st_size} B, {time.perf_counter() - t0:.1f} s)")

    if args.prune and ex.umap.cache_dir and ex.umap.cache_dir.is_dir() and not args.names:
        keep = {ex.umap.cache_file(key) for key in used_keys}  # <key>.<settings tag>.npy
        for f in sorted(ex.umap.cache_dir.glob("*.npy")):
            if f not in keep:  # a checkpoint gone or retrained, or older UMAP settings
                f.unlink()
                print(f"pruned {f.name}")

    # What the app does with them: a fresh projector reads each file, no worker is started.
    reader = Explorer(args.checkpoints, args.data_root)
    fresh = reader.umap
    for name, key, codes in written:
        if fresh.get(key, codes) is None:
            print(f"{name}: the app does not read the file back")
            failures += 1
    if fresh._worker is not None:
        print("a UMAP worker was started while reading the files back")
        failures += 1
    reader.close()
    ex.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
