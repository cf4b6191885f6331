"""SAM 2 model speed on CUDA at 1024: SAM 2's own propagation vs the engine, random weights (the cost of a forward
pass does not depend on the weights' values). Prints torch/CUDA versions and peak GPU memory.

Goal on a modern GPU: the engine within 1.3x of SAM 2's own `propagate_in_video`, and >= 90 frames/s for
hiera-tiny at 1024 compiled. Run once without and once with SAM 2's compiled (vos_optimized) predictor.

    python bench/sam2_gpu.py [--image-size 1024] [--frames 64] [--device cuda] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_resume import model_speed, print_model_speed  # noqa: E402


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled (SCARMON_SAM2_COMPILE=1) run")
    args = ap.parse_args()
    cuda = torch.version.cuda
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"torch {torch.__version__}, CUDA {cuda}, {name}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine (or pass --device cpu with a small --image-size)")
    print_model_speed(model_speed(args.device, args.image_size, args.frames, hw=512))
    if not args.no_compile:  # SCARMON_SAM2_COMPILE=1: SAM 2's vos_optimized predictor (torch.compile, max-autotune)
        print_model_speed(model_speed(args.device, args.image_size, args.frames, hw=512, warmup=3, compile=True))


if __name__ == "__main__":
    main()
