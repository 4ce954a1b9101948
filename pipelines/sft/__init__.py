"""Supervised fine-tuning: chat-data sources (sources.py, formats.py, records.py) for the SFT stage."""
