"""BlackVIP: an input-dependent visual prompt (a frozen pretrained encoder + a small decoder whose
weights are searched), SPSA with gradient correction, 2·sp_avg queries per step."""

from __future__ import annotations

from dataclasses import dataclass

from zipfast.data import synthetic
from zipfast.evaluate.image import ImageEvaluator
from zipfast.methods.base import IMAGE_SEEDS, MINIBATCH_KEYS, Method, MethodOptionError, Parts, Seeds
from zipfast.methods.bptvlm import positive, positive_int
from zipfast.optim.spsa_gc import SPSAGC
from zipfast.spaces.coordinator import BACKBONES, CoordinatorPrompter, load_coordinator_encoder

SECTION = "TRAINER.BLACKVIP."
AUTOCASTS = ("prec", "official")


@dataclass
class BlackVIPOptions:
    """Defaults: the paper's (configs/trainers/BlackVIP/vit_b16.yaml)."""

    backbone: str = "vit-mae-base"  # TRAINER.BLACKVIP.PT_BACKBONE
    encoder: str = ""  # where the encoder comes from: "" = the backbone's hub name, a local dir, or "none"
    src_dim: int = 1568  # SRC_DIM
    spsa_params: tuple = (1.0, 0.01, 0.01, 0.4, 0.1)  # SPSA_PARAMS (o, c, a, alpha, gamma)
    moms: float = 0.8  # MOMS
    p_eps: float = 1.0  # P_EPS
    sp_avg: int = 5  # TRAINER.BASIC.SP_AVG
    opt_type: str = "spsa-gc"  # TRAINER.BASIC.OPT_TYPE
    # "prec": queries run at the run's precision (PREC); "official": under fp16 autocast on CUDA whatever
    # PREC says, as the official trainer (tests stay at PREC; no effect off CUDA). --trainer BlackVIP: "official"
    autocast: str = "prec"

    def check(self) -> None:
        self.spsa_params = tuple(self.spsa_params)
        if self.backbone not in BACKBONES:
            raise MethodOptionError(f"{SECTION}PT_BACKBONE {self.backbone!r} is not supported; choose one of "
                                    f"{', '.join(BACKBONES)}")
        positive_int(self, "src_dim", SECTION + "SRC_DIM")
        positive_int(self, "sp_avg", "TRAINER.BASIC.SP_AVG")
        positive(self, "p_eps", SECTION + "P_EPS", allow_zero=True)
        if self.opt_type not in ("spsa-gc", "spsa"):
            raise MethodOptionError(f"TRAINER.BASIC.OPT_TYPE {self.opt_type!r}: BlackVIP runs 'spsa-gc' or 'spsa'")
        p = self.spsa_params
        if len(p) != 5 or not all(isinstance(v, (int, float)) for v in p) or p[1] <= 0 or p[2] <= 0:
            raise MethodOptionError(f"{SECTION}SPSA_PARAMS must be [o, c, a, alpha, gamma] with c, a > 0, got {p!r}")
        if self.autocast not in AUTOCASTS:
            raise MethodOptionError(f"blackvip option autocast {self.autocast!r}: choose prec (the run's precision) "
                                    "or official (fp16 autocast on CUDA, as the official trainer)")
        if not 0 <= self.moms < 1:
            raise MethodOptionError(f"{SECTION}MOMS must be in [0, 1), got {self.moms!r}")


OFFICIAL_KEYS = {"backbone": SECTION + "PT_BACKBONE", "src_dim": SECTION + "SRC_DIM",
                 "spsa_params": SECTION + "SPSA_PARAMS", "moms": SECTION + "MOMS", "p_eps": SECTION + "P_EPS",
                 "sp_avg": "TRAINER.BASIC.SP_AVG", "opt_type": "TRAINER.BASIC.OPT_TYPE"}
TRAIN_PY_DEFAULTS = {"METHOD": "coordinator", "PT_BACKBONE": "vit-mae-base", "SRC_DIM": 1568, "E_OUT_DIM": 0,
                     "SPSA_PARAMS": [1.0, 0.005, 0.01, 0.4, 0.2], "MOMS": 0.9, "P_EPS": 1.0, "PREC": "fp32"}
PAPER_KEYS = ("backbone", "src_dim", "spsa_params", "moms", "p_eps", "sp_avg", "opt_type")


def query_precision(options: BlackVIPOptions, device) -> str | None:
    """The training queries' precision where it is not the run's, else None: with autocast "official"
    on CUDA they run under fp16 autocast, as the official trainer wraps every query in
    `torch.cuda.amp.autocast()` whatever PREC says (off CUDA that autocast does nothing)."""
    return "fp16" if options.autocast == "official" and device.type == "cuda" else None


def encoder(cfg, options: BlackVIPOptions, cache: dict | None = None):
    """The frozen encoder of a run, or None for the build's own (random weights of the backbone's
    architecture seeded by the run seed: encoder "none").

    On the generated image task with no encoder set: the task's small ViT-MAE, random weights seeded by
    the run seed. Pretrained weights (the hub name, or a directory) do not depend on the seed: with a
    `cache` dict they are loaded once and shared by every run.
    """
    source = options.encoder
    if cfg.dataset == synthetic.NAME and not source:
        from transformers import ViTMAEConfig

        return load_coordinator_encoder(options.backbone, "none", seed=cfg.seed,
                                        config=ViTMAEConfig(**synthetic.COORDINATOR))
    if source.lower() in ("none", "random"):
        return None
    cache = {} if cache is None else cache
    key = ("blackvip-encoder", options.backbone, source)
    if key not in cache:
        cache[key] = load_coordinator_encoder(options.backbone, source or None)
    return cache[key]


def build(task, options: BlackVIPOptions, seeds: Seeds) -> Parts:
    c, m = task.config, options
    ev = ImageEvaluator.create(task, task.backends, c.precision, expected_size=(c.image_size, "INPUT.SIZE (image_size)"),
                               query_precision=query_precision(m, task.device))
    encoder = task.encoder
    if encoder is None:
        encoder = load_coordinator_encoder(m.backbone, m.encoder or None, seed=c.seed)
    encoder = encoder.to(task.device)
    space = CoordinatorPrompter(encoder, encoder.z_dim, m.src_dim, m.p_eps, c.pixel_mean, c.pixel_std, c.image_size)
    opt = SPSAGC(space.init_params(seeds.generator(IMAGE_SEEDS.params)), m.sp_avg, m.spsa_params, m.moms,
                 seeds.seed_for(IMAGE_SEEDS.optim), m.opt_type)
    return Parts(space, opt, ev)


METHOD = Method("blackvip", "BlackVIP: input-dependent visual prompt (MAE encoder + decoder), SPSA-GC",
                BlackVIPOptions, "2·sp_avg = 10 per step", build, ("image",), official=("BlackVIP", "BLACKVIP"),
                official_keys=OFFICIAL_KEYS, official_defaults=TRAIN_PY_DEFAULTS,
                official_behaviour={"autocast": "official"}, paper_keys=PAPER_KEYS,
                prompt_keys=("backbone", "src_dim", "p_eps"), resources=encoder, config_keys=MINIBATCH_KEYS)
