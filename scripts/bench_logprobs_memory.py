"""Peak extra memory of `target_logprobs` (chunked) vs a full float32 `log_softmax`, on CPU.

Each variant runs in a fresh process; the peak resident memory above the baseline (logits already allocated) is read
from /proc after resetting the kernel's high-water mark. Usage: `python scripts/bench_logprobs_memory.py`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, torch
from vdtrain import target_logprobs
B, L, V, dtype, variant = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.manual_seed(0)
logits = torch.randn(B, L, V, dtype=getattr(torch, dtype))
labels = torch.randint(0, V, (B, L))
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
target_logprobs(logits[:, :8], labels[:, :8])  # warm up kernels and the allocator
base = rss("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
if variant == "chunked":
    out = target_logprobs(logits, labels)
else:
    full = torch.log_softmax(logits.float(), dim=-1)
    out = full[:, :-1].gather(-1, labels[:, 1:, None]).squeeze(-1)
    del full
print(json.dumps({"peak_extra_mib": (rss("VmHWM") - base) / 2**20}))
"""


def measure(batch: int, length: int, vocab: int, dtype: str, variant: str) -> float:
    """Peak extra MiB of one variant in a fresh process."""
    args = [sys.executable, "-c", CHILD, str(batch), str(length), str(vocab), dtype, variant]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_extra_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[2, 1024, 32000], metavar=("B", "L", "V"))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    batch, length, vocab = args.shape
    logits_mib = batch * length * vocab * 4 / 2**20
    print(f"logits [{batch}, {length}, {vocab}] (float32 size {logits_mib:.0f} MiB)")
    print(f"{'dtype':<10} {'full log_softmax':>18} {'target_logprobs':>17} {'ratio':>7}")
    for dtype in args.dtypes:
        full = measure(batch, length, vocab, dtype, "full")
        chunked = measure(batch, length, vocab, dtype, "chunked")
        print(f"{dtype:<10} {full:>14.1f} MiB {chunked:>13.1f} MiB {chunked / full:>7.3f}")


if __name__ == "__main__":
    main()
