"""Settings of the clean stage."""

from pydantic import Field

from lm.config_base import StrictModel


class CleanConfig(StrictModel):
    inputs: list[str] = Field(default_factory=list, description="files, globs, folders or URIs")
