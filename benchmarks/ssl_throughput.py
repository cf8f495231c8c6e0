"""Training throughput (crops/s) at 64x64 for SimCLR, BYOL and the autoencoder.

Steady-state optimizer steps on in-memory crops (68x68 in, 64x64 views, both augmentations
included; data loading excluded, see ssl_bbbc021.json for end-to-end figures), after one warm-up step.
Usage: nice -n 10 python benchmarks/ssl_throughput.py [--device cpu|cuda] [--threads 2] [--steps 5]
Writes benchmarks/results/ssl_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cellkit.models import AugmentConfig, augment, build_model, default_config


def measure(method: str, width: int, batch: int, steps: int, device: torch.device) -> float:
    config = default_config(method, width=width)
    model = build_model(method, 3, config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    aug = AugmentConfig.from_dict(config["augment"])
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, 68, 68, device=device, generator=gen)
    amp = device.type == "cuda"
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        v1 = augment(x, aug, 64, gen)
        v2 = augment(x, aug, 64, gen) if method != "autoencoder" else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(v1, v2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if method == "byol":
            model.update_target()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch * steps / sum(times[1:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--widths", default="16,32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
               "threads": torch.get_num_threads(), "batch_size": args.batch_size, "load_average_before": os.getloadavg(),
               "crops_per_s": {}}
    for width in map(int, args.widths.split(",")):
        for method in ("simclr", "byol", "autoencoder"):
            speed = measure(method, width, args.batch_size, args.steps, device)
            results["crops_per_s"][f"{method}_w{width}"] = speed
            print(f"{method:<12} width {width:<3} {speed:8.1f} crops/s", flush=True)
    results["load_average_after"] = os.getloadavg()
    print(f"load average before/after: {results['load_average_before']} / {results['load_average_after']}")
    dest = Path(__file__).resolve().parent / "results" / f"ssl_throughput_{device.type}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
