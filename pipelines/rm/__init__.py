"""The reward-model stage: preference pairs (the tiny world's and preference files) -> models/rm."""
