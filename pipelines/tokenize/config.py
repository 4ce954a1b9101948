"""Settings of the tokenizer and the tokenize stage."""

from lm.config_base import StrictModel


class TokenizeConfig(StrictModel):
    tokenizer: str = "train"
