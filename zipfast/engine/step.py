"""The fused ZIP step: one function over static buffers, captured as a CUDA graph on CUDA.

    candidates (perturb, low rank, Fastfood; zipfast.ops.candidates)
      → engine.text_features (prefix pass + suffix pass of the batched engine)
      → clip_loss (zipfast.ops.clip_loss)
      → spsa_update (regenerates z from the counters; zipfast.ops.spsa_update)

Every input and output lives in a tensor allocated once: the point w, the momentum, the
step and seed counters (int64 device tensors: each replay reads the current step, so it
draws fresh perturbations), the minibatch's image features and labels (copied in before
each step), the losses, accuracies and statistics. Nothing in `step_fn` reads a value
back to the host, so on CPU it runs eagerly (and compiles with torch.compile(fullgraph=True)),
and on CUDA it is captured once per shape (warm-up on a side stream, one memory pool) and
replayed. The trajectory equals SPSA(perturbation="philox") through the engine (tests/test_step.py).
`CapturedStep` (eager or graph, first replay checked) is shared with the run group's step
(zipfast.engine.group_step).
"""

from __future__ import annotations

import torch

from zipfast.env import get_logger
from zipfast.ops import registry, selfcheck
from zipfast.ops.candidates import candidates
from zipfast.ops.clip_loss import clip_loss
from zipfast.ops.spsa_update import STATS, schedules, spsa_update

log = get_logger("step")


class CapturedStep:
    """`step_fn` over static buffers, run eagerly or (use_graph) captured once as a CUDA graph and
    replayed, the first replay checked against the eager step. A subclass sets device, use_graph,
    graph = None and defines step_fn, `_state()` (the tensors a step advances, restored after the
    warm-up and the check) and `_outputs()` (what the check compares), both {name: tensor}."""

    what = "the fused ZIP step"  # for the log
    op = "fused_step"  # the registry's name of a rejected graph (the run report's "op fused_step")

    def step_fn(self) -> None:
        raise NotImplementedError

    def _state(self) -> dict:
        raise NotImplementedError

    def _outputs(self) -> dict:
        raise NotImplementedError

    def _shape(self) -> str:
        return ""

    def _run(self) -> None:
        """One step, on the inputs already in the buffers."""
        if not self.use_graph:
            self.step_fn()
            return
        if self.graph is None:
            self._capture()
            if selfcheck.mode() != "0":
                self._first_replay_checked()  # the graph is trusted only once it equals the eager step
                return
        self.graph.replay()

    def _capture(self) -> None:
        """Warm up on a side stream (lazy inits, Triton compiles), then capture one step."""
        state = {n: t.clone() for n, t in self._state().items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.step_fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for n, t in self._state().items():  # the warm-up must not count as a step
            t.copy_(state[n])
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=torch.cuda.graph_pool_handle()):
            self.step_fn()
        log.info("captured %s as a CUDA graph (%s)", self.what, self._shape())

    def _first_replay_checked(self) -> None:
        """This step twice from the same state: eagerly, then as the graph's first replay. The
        graph is kept when its outputs equal the eager ones (relative 1e-6); otherwise it is
        dropped for this step object, the eager results stand, and the fallback is logged and
        recorded in `zipfast.ops.registry.fallbacks()` (hence in the run report)."""
        before = {n: t.clone() for n, t in self._state().items()}
        self.step_fn()
        eager = {n: t.clone() for n, t in {**self._outputs(), **self._state()}.items()}
        for n, t in self._state().items():
            t.copy_(before[n])
        try:
            self.graph.replay()
            problem = selfcheck.first_problem(*(selfcheck.compare(t, eager[n], f"graph replay {n}", rtol=1e-6)
                                                for n, t in self._outputs().items()))
        except Exception as e:  # a replay that fails is as untrustworthy as a wrong one
            problem = f"replay raised {type(e).__name__}: {e}"
        if problem is None:
            return
        for n, t in {**self._outputs(), **self._state()}.items():
            t.copy_(eager[n])
        self.graph, self.use_graph = None, False
        log.warning("%s's CUDA graph disagrees with the eager step (%s); running it eagerly", self.what, problem)
        registry.note_fallback(self.op, self.device.type, "eager", {"cuda-graph": f"self-check failed: {problem}"})


class FusedZIPStep(CapturedStep):
    """Static-buffer ZIP step for one shape (q pairs, batch of B image features of width E).

    space: a ZIPSpace; engine: the query engine (its text_features must not sync the host);
    w0 [δ]; step: completed steps; seed: the SPSA seed (Philox key = seed mod 2^32);
    spsa_params (o, c, a, alpha, gamma); opt_type spsa-clip | spsa | spsa-gc; moms: b1.
    """

    def __init__(self, space, engine, w0: torch.Tensor, *, seed: int, q: int, batch_size: int, feat_dim: int,
                 spsa_params=(1.0, 0.01, 0.01, 0.4, 0.1), opt_type: str = "spsa-clip", moms: float = 0.8,
                 step: int = 0, momentum: torch.Tensor | None = None, use_graph: bool | None = None):
        dev = engine.device
        self.space, self.engine, self.q = space, engine, q
        self.o, self.c, self.a, self.alpha, self.gamma = (float(v) for v in spsa_params)
        self.opt_type, self.b1 = opt_type, float(moms)
        self.device = dev
        self.w = w0.detach().to(dev, torch.float32).clone()
        self.momentum = torch.zeros_like(self.w) if momentum is None else momentum.to(dev, torch.float32).clone()
        self.step = torch.tensor(int(step), dtype=torch.int64, device=dev)
        self.seed = torch.tensor(int(seed) & 0xFFFFFFFF, dtype=torch.int64, device=dev)
        self.feats = torch.zeros(batch_size, feat_dim, device=dev)
        self.labels = torch.zeros(batch_size, dtype=torch.int64, device=dev)
        self.ctx = torch.empty(2 * q, space.n_ctx, space.width, device=dev)
        self.losses = torch.zeros(2 * q, device=dev)
        self.accs = torch.zeros(2 * q, device=dev)
        self.stats = torch.zeros(len(STATS), device=dev)
        self.ff = space.fastfood.to(dev, torch.float32)
        self.ctx0 = space.ctx0.to(dev, torch.float32).contiguous()
        self.use_graph = (dev.type == "cuda") if use_graph is None else use_graph
        self.graph = None

    def step_fn(self) -> None:
        """One step on the static buffers (no host synchronisation)."""
        counters = self._perturb()  # fills ctx before the text pass reads it
        self._update(self.engine.text_features(self.ctx), *counters)

    def _perturb(self):
        """Step k = step + 1's candidates into ctx [2q, m, D] → (k, a_k, c_k) (device scalars)."""
        k = self.step + 1
        ak, ck = schedules(k, self.a, self.o, self.alpha, self.c, self.gamma)
        candidates(self.w, self.seed, k, ck, self.ctx0, self.ff, self.space.rank, self.q, out=self.ctx)
        return k, ak, ck

    def _update(self, txt: torch.Tensor, k, ak, ck) -> None:
        """The candidates' text features txt [2q, C, E] → losses, SPSA update, step + 1 (in the buffers)."""
        loss, acc = clip_loss(txt, self.feats, self.labels, self.engine.logit_scale)
        w_new, m_new, stats = spsa_update(self.w, self.momentum, loss, self.seed, k, ak, ck, mode=self.opt_type,
                                          b1=self.b1)
        self.w.copy_(w_new)
        self.momentum.copy_(m_new)
        self.losses.copy_(loss)
        self.accs.copy_(acc)
        self.stats.copy_(stats)
        self.step.add_(1)

    def load(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """The minibatch (features [B, E], labels [B]) into the static buffers."""
        self.feats.copy_(feats, non_blocking=True)
        self.labels.copy_(labels, non_blocking=True)

    def __call__(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Run one step on a minibatch (features [B, E], labels [B]); results stay in the buffers."""
        self.load(feats, labels)
        self._run()

    def _state(self) -> dict:
        return {"w": self.w, "momentum": self.momentum, "step": self.step}

    def _outputs(self) -> dict:
        return {"w": self.w, "momentum": self.momentum, "losses": self.losses, "accs": self.accs, "stats": self.stats}

    def _shape(self) -> str:
        return f"q={self.q}, batch {self.feats.shape[0]}"

    def record(self) -> dict:
        """The last step's statistics as host values (one synchronisation: call every log_every steps)."""
        s = self.stats.tolist()
        q = self.q
        accs = self.accs.tolist()
        return {"loss": s[4], "train_acc": (accs[q - 1] + accs[2 * q - 1]) / 2, "a_k": s[0], "c_k": s[1],
                "grad_norm": s[2], "clipped": bool(s[3])}
