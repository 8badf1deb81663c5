"""zipfast's settings: the flat `TrainConfig`, and the official ZIP (yacs) config mapped onto it.

Two ways in, one way out:

- our own flags / JSON → `TrainConfig` (`merge_flags`, `TrainConfig.from_dict`);
- the official trainer's yaml files and trailing `KEY VALUE` list → `load_official` → a yacs
  `CfgNode` → `cfg_to_train_config`.

Either way the trainer receives one validated `TrainConfig`. Every error is a `ConfigError`
that names the offending field, in the official KEY spelling where one exists, so a command
line copied from the official scripts fails with a message its author recognises.
"""

from zipfast.config.official import (OPENAI_BACKBONES, cfg_to_train_config, default_cfg, load_official,
                                     load_official_image, method_options, official_backbone, official_model_name,
                                     paper_opts, train_config_from_official)
from zipfast.config.train import (AUGMENTS, INTERPOLATIONS, OFFICIAL_KEYS, OPT_TYPES, PERTURBATIONS, PRECISIONS,
                                  TRANSFORMS, TrainConfig, merge_flags)
from zipfast.errors import ConfigError

__all__ = ["TrainConfig", "ConfigError", "OFFICIAL_KEYS", "merge_flags", "load_official", "cfg_to_train_config",
           "default_cfg", "official_model_name", "official_backbone", "OPENAI_BACKBONES", "load_official_image",
           "method_options", "paper_opts", "train_config_from_official", "OPT_TYPES", "PERTURBATIONS", "PRECISIONS",
           "AUGMENTS", "INTERPOLATIONS", "TRANSFORMS"]
