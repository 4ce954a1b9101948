"""One module per input format the clean stage reads, each a ``read_<format>(file, compression, cfg)``
that yields document dicts and error rows (pipelines/clean/documents.py) and never raises for bad data."""
