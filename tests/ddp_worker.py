"""Run by tests/test_training.py under torchrun (2 gloo ranks on CPU): trains
through the normal entry point and saves each rank's final weights."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from vae_explorer import TrainConfig, build_model, fit, load_dataset

out = Path(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
data = load_dataset("digits")
for name in ("vq_vae", "vae"):
    torch.manual_seed(rank)  # different initial weights per rank: DDP must make them agree
    model = build_model(name, **data.model_settings())
    if rank == 0 and name == "vae":
        save_file({k: v.clone() for k, v in model.state_dict().items()}, out / "init.safetensors")
    config = TrainConfig(epochs=2, batch_size=50, device="cpu", iwae_k=0,
                         checkpoint=str(out / "ckpt") if name == "vae" else None)
    fit(model, data, config)
    suffix = "" if name == "vae" else f".{name}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"rank{rank}{suffix}.safetensors")
(out / f"rank{rank}.json").write_text(json.dumps({"world_size": dist.get_world_size(), "epochs": config.epochs}))
dist.destroy_process_group()
