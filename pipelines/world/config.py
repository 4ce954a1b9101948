"""Settings of the tiny world: the seeded mini web crawl and the facts behind it."""

from pydantic import Field

from lm.config_base import StrictModel


class WorldConfig(StrictModel):
    num_pages: int = Field(2000, ge=10, description="WARC response records to write")
    num_files: int = Field(4, ge=1, description="gzipped WARC files to spread them over")
