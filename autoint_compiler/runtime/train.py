"""Training loops for compiled AutoInt networks.

The compiled grad network ``net.grad`` is an ordinary forward network (primal chain plus tangent
chain sharing the weights), so fitting it takes first-order backprop only: no
``autograd.grad(create_graph=True)``, no double backward. That is also why ``torch.compile`` of the
grad module works (``TrainConfig.compile``).

Two kinds of supervision:

* :func:`fit_samples` -- point samples ``(x, f(x))`` of the signal: ``loss = mse(grad(x), f(x))``.
* :func:`fit_line_integrals` -- measured integrals along lines (e.g. a sinogram): for each line the
  integral of the grad network over ``[a, b]`` in the integration column is estimated by stratified
  Monte-Carlo samples of ``t`` (``mode="grad"``, the default) and matched to the measurement. With
  ``mode="integral"`` the closed form ``net.integrate`` (two evaluations of the integral network)
  is used instead.

Both are thin wrappers around :func:`train`, which takes any ``loss_fn(module, generator, step)``.

**Data-parallel training.** :func:`train` runs unchanged under ``torchrun --nproc-per-node N``: it joins
the process group (gloo on CPU, nccl on CUDA; :mod:`autoint_compiler.runtime.distributed`), wraps the trained
module in ``DistributedDataParallel``, seeds each rank's generator differently (rank 0 keeps
``config.seed``), and the fitting functions draw ``batch_size / N`` samples per rank (from the rank's
shard of the lines in :func:`fit_line_integrals`), so ``batch_size`` stays the global batch. Only rank
0 shows progress and writes files. DDP does not support double backward
(``autograd.grad(create_graph=True)``); the compiled grad network needs none, which is why it can be
wrapped in DDP at all.

**Resumable runs.** ``TrainConfig(run_dir=..., checkpoint_every=K, keep_checkpoints=M, resume=True)``
keeps a run directory (:mod:`autoint_compiler.runtime.runs`) and continues from its newest checkpoint,
bit-identically on CPU.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from . import distributed

__all__ = [
    "TrainConfig",
    "History",
    "LineData",
    "PointPenalty",
    "train",
    "DivergenceGuard",
    "fit_samples",
    "fit_line_integrals",
    "line_integral_mc",
    "resolve_device",
    "device_error",
]


@dataclass
class TrainConfig:
    """Options of :func:`train`.

    ``lr_schedule``: ``"cosine"`` decays the learning rate from ``lr`` to ``lr * lr_min_factor``
    over ``steps`` (a cheap, reliable gain in final accuracy); ``"constant"`` keeps ``lr``.
    ``progress``: ``None`` shows a tqdm bar only when stderr is a TTY; ``True``/``False`` force it.
    ``compile``: wrap the grad module in ``torch.compile`` (slow to start on CPU; off by default).
    ``threads``: ``torch.set_num_threads`` for the duration of the loop (restored after). Small
    networks train faster on one thread, and far faster when other processes share the cores.
    """

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 1024
    seed: int = 0
    device: str = "cpu"
    compile: bool = False
    compile_backend: str | None = None  # torch.compile backend (None: inductor); "aot_eager" for tests
    progress: bool | None = None
    lr_schedule: str = "cosine"
    lr_min_factor: float = 0.05
    grad_clip: float | None = None
    weight_decay: float = 0.0
    threads: int | None = None  # CPU intra-op threads while training (None: leave torch's setting)
    run_dir: str | None = None  # a run directory (spec, config, checkpoints): see autoint_compiler.runtime.runs
    checkpoint_every: int = 0  # steps between checkpoints in run_dir (0: only at the end)
    keep_checkpoints: int = 3  # the newest checkpoints kept in run_dir
    resume: bool = False  # continue from run_dir's newest checkpoint (a fresh start if it has none)
    guard: bool = False  # detect divergence (non-finite or blown-up loss) and recover: see DivergenceGuard
    guard_factor: float = 8.0  # blow-up: the smoothed loss rose above this times its best so far
    guard_backoff: float = 0.5  # learning-rate factor applied at each recovery
    guard_every: int = 25  # steps between in-memory snapshots of the last good state
    guard_max: int = 6  # recoveries before training stops early at the last good state

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seed", "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in ("lr", "lr_min_factor", "weight_decay", *(("grad_clip",) if self.grad_clip is not None else ())):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.guard_factor > 1 and 0 < self.guard_backoff < 1 and self.guard_every >= 1 and self.guard_max >= 0):
            raise ValueError("guard_factor must be > 1, guard_backoff in (0, 1), guard_every >= 1, guard_max >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")


@dataclass
class History:
    """What :func:`train` returns: per-step losses and timings."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    wall_time: float = 0.0  # seconds, whole loop (including torch.compile warm-up if any)
    steps_per_s: float = 0.0
    device: str = "cpu"
    compiled: bool = False
    train_s: float = 0.0  # seconds of training in total, over every resumed session of a run directory
    recoveries: list[dict[str, Any]] = field(default_factory=list)  # divergence events (TrainConfig.guard)
    resumed_from: int = 0  # the step a resumed run continued from (0: a fresh start)
    stopped_early: bool = False  # the guard gave up after guard_max recoveries (state: the last good one)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    def smoothed_final_loss(self, window: int = 50) -> float:
        tail = self.losses[-window:]
        return sum(tail) / len(tail) if tail else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["final_loss"] = self.final_loss
        return d


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (cuda when available)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available in this torch build")
    return dev


def device_error(device: str | torch.device | None) -> str | None:
    """Why ``device`` cannot be used here (for a one-line CLI error), or ``None``."""
    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        return str(exc)
    return None


def _param_dtype(net: Any) -> torch.dtype:
    for p in net.integral.parameters():
        return p.dtype
    return torch.get_default_dtype()


def show_progress(flag: bool | None) -> bool:
    """A progress bar when asked, else only on a terminal."""
    if flag is not None:
        return bool(flag)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.lr_schedule == "constant" or cfg.steps <= 1:
        return cfg.lr
    frac = step / (cfg.steps - 1)
    lo = cfg.lr * cfg.lr_min_factor
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * frac))


class DivergenceGuard:
    """Divergence detection and recovery for :func:`train` (``TrainConfig(guard=True)``).

    Every step's loss is checked before its backward pass: a non-finite loss, or an exponential
    moving average of the loss (weight 0.1) above ``guard_factor`` times the best average so far
    (after 20 steps), is a divergence. Recovery restores the parameters and optimizer state of the
    last snapshot (taken every ``guard_every`` steps, only of finite parameters after a healthy
    loss) and multiplies the learning rate by ``guard_backoff`` from then on; training continues
    from the snapshot's step (the batches drawn from there on differ: the generator is not rewound).
    After ``guard_max`` recoveries training stops at the last good state. Each event is a dict
    ``{step, reason, loss, restored_to, lr_factor}`` in :attr:`History.recoveries`."""

    def __init__(self, cfg: TrainConfig, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer):
        self.cfg, self.params, self.opt = cfg, params, opt
        self.lr_factor = 1.0
        self.events: list[dict[str, Any]] = []
        self.ema: float | None = None
        self.best = math.inf
        self.seen = 0
        self.snap: tuple[int, list[torch.Tensor], dict[str, Any]] | None = None

    def check(self, step: int, loss: float) -> str | None:
        """Why the loss at ``step`` is a divergence, or ``None`` (then it joins the average)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        if self.seen >= 20 and ema > self.cfg.guard_factor * self.best:
            return f"loss blew up ({ema:.3g} against a best average of {self.best:.3g})"
        self.ema, self.seen = ema, self.seen + 1
        if self.seen >= 20:
            self.best = min(self.best, ema)
        return None

    def snapshot(self, step: int) -> None:
        if all(bool(torch.isfinite(p).all()) for p in self.params):
            self.snap = (step, [p.detach().clone() for p in self.params], copy.deepcopy(self.opt.state_dict()))

    def recover(self, step: int, loss: float, reason: str) -> int | None:
        """Restore the last good state; returns the step to continue from (``None``: give up)."""
        if self.snap is None or len(self.events) >= self.cfg.guard_max:
            self.events.append({"step": step, "reason": reason, "loss": loss, "restored_to": None})
            if self.snap is not None:  # stop at the last good state
                self._restore()
            return None
        self.lr_factor *= self.cfg.guard_backoff
        self.events.append(
            {"step": step, "reason": reason, "loss": loss, "restored_to": self.snap[0], "lr_factor": self.lr_factor}
        )
        self._restore()
        self.ema = None  # the average restarts at the restored state; the best so far stays
        return self.snap[0]

    def _restore(self) -> None:
        assert self.snap is not None
        _, values, opt_state = self.snap
        with torch.no_grad():
            for p, v in zip(self.params, values):
                p.copy_(v)
        self.opt.load_state_dict(copy.deepcopy(opt_state))


LossFn = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Generator, int], torch.Tensor]


def train(
    net: Any,
    loss_fn: LossFn,
    config: TrainConfig | None = None,
    *,
    desc: str = "train",
    callback: Callable[[int, float], None] | None = None,
    module: str = "grad",
) -> History:
    """Optimise ``net``'s shared parameters with Adam to minimise ``loss_fn``.

    ``loss_fn(m, generator, step)`` gets the module to train through -- ``net.grad`` (``module=
    "grad"``, the default) or ``net.integral`` (``module="integral"``), wrapped in
    ``DistributedDataParallel`` under torchrun and in ``torch.compile`` with ``config.compile`` --
    a ``torch.Generator`` on the training device (seeded from ``config.seed``, per rank) and the
    step index, and returns a scalar loss. Call the module it is handed (not ``net.grad`` or
    ``net.integrate``): that is what DDP synchronises. The parameters are those of
    ``net.integral`` (the grad network shares them). ``net`` is moved to ``config.device`` first.
    ``callback(step, loss)``, if given, is called every step with this rank's loss as a float
    (this syncs the device; leave it out on GPU). ``History.losses`` are averaged over ranks.
    """
    cfg = config or TrainConfig()
    if module not in ("grad", "integral"):
        raise ValueError(f"module must be 'grad' or 'integral', got {module!r}")
    if cfg.threads is None:
        return _train(net, loss_fn, cfg, desc, callback, module)
    old = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(net, loss_fn, cfg, desc, callback, module)
    finally:
        torch.set_num_threads(old)


def _train(net, loss_fn, cfg: TrainConfig, desc: str, callback, which: str) -> History:
    if cfg.resume and cfg.run_dir is None:
        raise ValueError("resume=True needs a run_dir")
    device = resolve_device(cfg.device)
    if distributed.setup(device) and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", distributed.local_rank())
    seed = distributed.rank_seed(cfg.seed)
    torch.manual_seed(seed)
    net.integral.to(device)
    net.grad.to(device)
    params = list(net.integral.parameters())
    if not params:
        raise ValueError("network has no parameters to train")
    grad_ids = {id(p) for p in net.grad.parameters()}
    if grad_ids and not grad_ids <= {id(p) for p in params}:
        raise ValueError("net.grad has parameters that net.integral does not: they must be shared")
    target = net.grad if which == "grad" else net.integral
    module: Callable[[torch.Tensor], torch.Tensor] = distributed.wrap(target, device)
    if cfg.compile:
        kw = {} if cfg.compile_backend is None else {"backend": cfg.compile_backend}
        module = torch.compile(module, **kw)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    losses = torch.zeros(cfg.steps, dtype=torch.float64, device=device)
    start = 0
    run = found = None
    if cfg.run_dir is not None:
        from .runs import RunDir

        run = RunDir(cfg.run_dir, net, cfg)
        found = run.open(cfg.resume)
        if found is not None:
            start = run.restore(found[1], opt, gen, losses)
    main = distributed.is_main()
    show = show_progress(cfg.progress) and main
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not show, dynamic_ncols=True, unit="step")
    net.integral.train()
    net.grad.train()
    t0 = time.perf_counter()
    last_post = t0
    every = cfg.checkpoint_every
    guard = DivergenceGuard(cfg, params, opt) if cfg.guard else None
    if guard is not None:
        guard.lr_factor = run.lr_factor if run is not None else 1.0
        guard.snapshot(start)
    stopped = False
    step = start
    try:
        while step < cfg.steps:
            lr = _lr_at(cfg, step) * (guard.lr_factor if guard is not None else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module, gen, step)
            if guard is not None:
                value = float(loss.detach())
                reason = guard.check(step, value)
                if reason is not None:
                    back = guard.recover(step, value, reason)
                    if show:
                        bar.write(
                            f"{desc}: step {step}: {reason}; "
                            + (f"restored step {back}, lr x{guard.lr_factor:g}" if back is not None else "stopping")
                        )
                    if back is None:
                        stopped = True
                        break
                    losses[back:step] = 0.0
                    if show:
                        bar.n = back
                        bar.refresh()
                    step = back
                    continue
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses[step] = loss.detach()
            if callback is not None:
                callback(step, float(loss.detach()))
            if guard is not None and (step + 1) % cfg.guard_every == 0:
                guard.snapshot(step + 1)
            if run is not None and every and (step + 1) % every == 0 and step + 1 < cfg.steps:
                if guard is not None:
                    run.lr_factor = guard.lr_factor
                run.save(step + 1, opt, gen, losses)
            if show:
                bar.update(1)
                now = time.perf_counter()
                if now - last_post > 0.5 or step == cfg.steps - 1:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3e}", lr=f"{lr:.1e}")
                    last_post = now
            step += 1
    finally:
        bar.close()
    if stopped:
        losses[step:] = float("nan")  # steps not taken
    if run is not None and (start < cfg.steps or found is None):
        if guard is not None:
            run.lr_factor = guard.lr_factor
        run.save(cfg.steps, opt, gen, losses)  # the final state (a resumed finished run has it already)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    net.integral.eval()
    net.grad.eval()
    done = step - start
    return History(
        losses=distributed.all_mean(losses).cpu().tolist(),
        steps=cfg.steps,
        wall_time=wall,
        steps_per_s=done / wall if wall > 0 else float("inf"),
        device=str(device),
        compiled=cfg.compile,
        train_s=(run.train_s if start < cfg.steps else run.prior_s) if run is not None else wall,
        recoveries=guard.events if guard is not None else [],
        resumed_from=start,
        stopped_early=stopped,
    )


# ----------------------------------------------------------------------------- point samples


SampleFn = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def fit_samples(net: Any, sample_fn: SampleFn, config: TrainConfig | None = None, *, desc: str = "fit") -> History:
    """Fit ``net.grad`` to point samples: ``sample_fn(n, generator) -> (x [n, D], y [n, out])``.

    ``sample_fn`` should create its tensors on ``generator.device`` (the training device) in the
    network's dtype; they are moved/cast if not. Under torchrun each rank asks for its share of
    ``config.batch_size`` from its own generator.
    """
    cfg = config or TrainConfig()
    dtype = _param_dtype(net)

    def loss_fn(grad, gen, step):
        x, y = sample_fn(distributed.local_batch(cfg.batch_size), gen)
        x = x.to(gen.device, dtype)
        y = y.to(gen.device, dtype)
        pred = grad(x)
        return torch.mean((pred - y.reshape(pred.shape)) ** 2)

    return train(net, loss_fn, cfg, desc=desc)


# ----------------------------------------------------------------------------- line integrals


@dataclass
class LineData:
    """Measured integrals along lines in the integration variable.

    ``x``: ``[L, D]`` the other inputs of each line (the integration column is ignored);
    ``lower``/``upper``: ``[L]`` the integration range; ``value``: ``[L, out]`` the measurement
    ``\u222b_lower^upper f(t, x) dt``.
    """

    x: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    value: torch.Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.value.dim() == 1:
            self.value = self.value[:, None]
        for name in ("lower", "upper", "value"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"LineData.{name} has {getattr(self, name).shape[0]} rows, x has {n}")
        self.lower = self.lower.reshape(n)
        self.upper = self.upper.reshape(n)

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device, dtype) -> "LineData":
        return LineData(
            self.x.to(device, dtype),
            self.lower.to(device, dtype),
            self.upper.to(device, dtype),
            self.value.to(device, dtype),
        )


def line_integral_mc(
    grad: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    column: int,
    n_samples: int,
    generator: torch.Generator | None = None,
    stratified: bool = True,
) -> torch.Tensor:
    """Estimate ``\u222b_lower^upper grad(x with x[:, column] = t) dt`` for each row of ``x``.

    Stratified sampling: ``[lower, upper]`` is cut into ``n_samples`` equal bins and ``t`` drawn
    uniformly in each (``stratified=False`` uses the bin midpoints, i.e. the midpoint rule, which
    is deterministic). Returns ``[L, out]``.
    """
    n_lines = x.shape[0]
    k = torch.arange(n_samples, device=x.device, dtype=x.dtype)
    if stratified:
        u = torch.rand(n_lines, n_samples, generator=generator, device=x.device, dtype=x.dtype)
    else:
        u = torch.full((n_lines, n_samples), 0.5, device=x.device, dtype=x.dtype)
    length = (upper - lower)[:, None]
    t = lower[:, None] + length * (k[None, :] + u) / n_samples  # [L, K]
    xs = x[:, None, :].expand(n_lines, n_samples, x.shape[1]).clone()
    xs[:, :, column] = t
    g = grad(xs.reshape(n_lines * n_samples, x.shape[1]))
    g = g.reshape(n_lines, n_samples, -1)
    return g.mean(dim=1) * length


@dataclass(frozen=True)
class PointPenalty:
    """An extra loss term on the grad network: ``points(gen)`` draws ``[P, D]`` network inputs each
    step, ``loss(values)`` turns the grad network's ``[P, out]`` values there into a scalar (e.g. a
    consistency term: the values two parameterisations of one point get should agree)."""

    points: Callable[[torch.Generator], torch.Tensor]
    loss: Callable[[torch.Tensor], torch.Tensor]


def fit_line_integrals(
    net: Any,
    lines: LineData,
    config: TrainConfig | None = None,
    *,
    n_samples: int = 32,
    mode: str = "grad",
    desc: str = "fit-lines",
    penalty: "PointPenalty | None" = None,
) -> History:
    """Fit the network so that its line integrals match ``lines.value``.

    ``mode="grad"`` (default): each step draws ``config.batch_size`` lines and estimates their
    integrals with ``n_samples`` stratified samples of the grad network along each line.
    ``mode="integral"``: uses the closed form Phi(b) - Phi(a) (two evaluations per line of the
    integral network, through the module :func:`train` hands over, so DDP and ``torch.compile``
    wrap it); ``n_samples`` is then unused. Only one integration variable is supported. Under
    torchrun each rank samples from its own contiguous shard of the lines.

    ``penalty``: a :class:`PointPenalty`, an extra loss term on the grad network at points it draws
    each step (``"grad"`` mode only). Its points go through the same call of the (DDP/compiled) grad
    module as the line samples: one forward per step.
    """
    cfg = config or TrainConfig()
    if mode not in ("grad", "integral"):
        raise ValueError(f"mode must be 'grad' or 'integral', got {mode!r}")
    if penalty is not None and mode != "grad":
        raise ValueError("a penalty term needs mode='grad' (it is evaluated on the grad network)")
    cols = list(net.integration_columns)
    if len(cols) != 1:
        raise ValueError(f"line-integral fitting needs exactly one integration variable, got {len(cols)}")
    column = cols[0]
    device = resolve_device(cfg.device)
    data = lines.to(device, _param_dtype(net))
    n_lines = len(data)
    if n_lines == 0:
        raise ValueError("no lines to fit")

    def loss_fn(m, gen, step):
        # this rank's shard of the lines and its share of the batch (the whole set on one process)
        lo_i, hi_i = distributed.shard_range(n_lines)
        if hi_i <= lo_i:
            raise ValueError(f"{n_lines} lines cannot be shared among {distributed.world_size()} ranks")
        batch = min(distributed.local_batch(cfg.batch_size), hi_i - lo_i)
        idx = torch.randint(lo_i, hi_i, (batch,), generator=gen, device=gen.device)
        x, lo, hi, val = data.x[idx], data.lower[idx], data.upper[idx], data.value[idx]
        extra: dict[str, torch.Tensor] = {}
        if mode == "grad":
            grad = m
            if penalty is not None:  # the penalty's points ride in the same call as the line samples
                pts = penalty.points(gen).to(device=x.device, dtype=x.dtype)

                def grad(z: torch.Tensor) -> torch.Tensor:
                    out = m(torch.cat([z, pts], 0))
                    extra["values"] = out[z.shape[0] :]
                    return out[: z.shape[0]]

            pred = line_integral_mc(grad, x, lo, hi, column, n_samples, gen, stratified=True)
        else:  # Phi(b) - Phi(a) through the module handed in (DDP/compiled integral network)
            ends = torch.cat([x, x], 0)
            ends[:batch, column] = hi
            ends[batch:, column] = lo
            phi = m(ends)
            pred = phi[:batch] - phi[batch:]
        loss = torch.mean((pred - val) ** 2)
        if "values" in extra:
            loss = loss + penalty.loss(extra["values"])
        return loss

    return train(net, loss_fn, cfg, desc=desc, module="grad" if mode == "grad" else "integral")
