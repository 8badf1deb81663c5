"""BlackVIP's optimiser: SPSA with gradient correction (momentum) through the shared
`zipfast.optim.SPSA` (opt_type "spsa-gc"), its candidates in the official query order."""

from __future__ import annotations

import torch

from zipfast.errors import UserError
from zipfast.optim.protocol import Optimizer
from zipfast.optim.spsa import SPSA


class SPSAGC(Optimizer):
    """BlackVIP's SPSA-GC on the flat decoder vector w: per step q pairs w ± c_k z_j asked in
    the official query order [+1, −1, +2, −2, …] (it matters for the decoder's BatchNorm
    running statistics); the arithmetic is `zipfast.optim.SPSA` with opt_type "spsa-gc"."""

    name = "blackvip-spsa"

    def __init__(self, w0: torch.Tensor, sp_avg: int = 5, spsa_params=(1.0, 0.01, 0.01, 0.4, 0.1),
                 moms: float = 0.8, seed: int = 0, opt_type: str = "spsa-gc"):
        if opt_type not in ("spsa-gc", "spsa"):
            raise UserError(f"TRAINER.BASIC.OPT_TYPE {opt_type!r}: BlackVIP runs 'spsa-gc' or 'spsa'")
        self.spsa = SPSA(w0.detach().clone().float(), opt_type, sp_avg, spsa_params, moms, seed=seed)
        self.dim = self.spsa.dim
        self._order = None

    @property
    def point(self) -> torch.Tensor:
        return self.spsa.point

    @property
    def step(self) -> int:
        return self.spsa.step

    def ask(self, allowance: int) -> torch.Tensor:
        cand = self.spsa.ask(allowance)  # [+1..+q ; −1..−q], q = min(sp_avg, allowance // 2)
        if cand.shape[0] == 0:
            return cand
        pairs = cand.shape[0] // 2
        self._order = torch.arange(2 * pairs).view(2, pairs).T.flatten()  # → +1, −1, +2, −2, …
        return cand[self._order]

    def discard(self) -> None:
        self.spsa.discard()
        self._order = None

    def tell(self, losses: torch.Tensor, accs: torch.Tensor | None = None) -> dict:
        if self._order is None:
            raise RuntimeError("tell() called without a preceding ask()")
        back = torch.empty_like(losses.detach().float().cpu())
        back[self._order] = losses.detach().float().cpu()
        info = self.spsa.tell(back)
        self._order = None
        return info

    def state_dict(self) -> dict:
        return {"kind": "blackvip-spsa", "spsa": self.spsa.state_dict()}

    def load_state_dict(self, sd: dict, device="cpu") -> None:
        if sd.get("kind") != "blackvip-spsa":
            raise ValueError(f"optimiser state is for {sd.get('kind')!r}, this run has 'blackvip-spsa'")
        self.spsa.load_state_dict(sd["spsa"], device)
