"""Settings of pretraining."""

from lm.config_base import StrictModel


class PretrainConfig(StrictModel):
    max_steps: int = 200
