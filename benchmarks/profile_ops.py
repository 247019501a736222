"""Where the generated grad network spends its time: ``python -m benchmarks.profile_ops``.

Runs torch.profiler over the generated grad forward (no_grad), the plain Φ forward and one generated
training step (eager), and prints per-op self CPU time and call counts, next to the hand-written
references, so a miss in the targets can be traced to the ops the generated code emits.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

from . import methods as M
from . import nets


def table(fn, steps: int, row_limit: int) -> str:
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    ka = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ka)
    lines = [f"  total self CPU {total / 1e3 / steps:.1f} ms per call; "
             f"{sum(e.count for e in ka if e.key.startswith('aten::')) / steps:.0f} aten calls per call"]
    for e in sorted(ka, key=lambda e: -e.self_cpu_time_total)[:row_limit]:
        lines.append(f"  {e.key:42s} {e.count / steps:6.1f} calls  {e.self_cpu_time_total / 1e3 / steps:8.2f} ms  "
                     f"{100 * e.self_cpu_time_total / max(total, 1):5.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_ops")
    p.add_argument("--size", default="4x128")
    p.add_argument("--activation", default="swish")
    p.add_argument("--batch", type=int, default=2**14)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=14)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    b = nets.build(a.size, a.activation)
    x = nets.make_inputs(a.batch, b.in_features, seed=1)
    target = M.make_target(x)
    cases = []
    for m in (M.FWD_PLAIN, M.FWD_GENERATED, M.FWD_HAND, M.FWD_HAND_FUSED, M.FWD_AUTOGRAD):
        if m != M.FWD_HAND_FUSED or b.hand_fused is not None:
            f = M.forward_fn(b, m)
            cases.append((f"forward: {m}", (lambda f=f: f(x))))
    for m in (M.TR_GENERATED, M.TR_DOUBLE, M.TR_HAND_FUSED):
        if m == M.TR_HAND_FUSED and b.hand_fused is None:
            continue
        cases.append((f"train step: {m}", M.train_step_fn(b, m, x, target)))
    print(f"{a.size} {a.activation} batch {a.batch}, {a.threads} threads, backend {b.backend}, "
          f"load {os.getloadavg()[0]:.2f}")
    for name, fn in cases:
        b.restore()
        print(f"\n== {name}")
        print(table(fn, a.steps, a.rows))
    b.restore()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
