# guarded, with the import inside: the world's worker processes are spawned, and spawn imports the
# main module again (this keeps them from re-running the CLI and from importing Ray)
if __name__ == "__main__":
    from pipelines.cli import stage_main

    stage_main("world")
