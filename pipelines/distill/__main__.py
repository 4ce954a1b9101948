from pipelines.cli import stage_main

stage_main("distill")
