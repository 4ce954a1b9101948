"""Reinforcement learning pieces with no Ray in them: advantage estimators and policy losses (algos)."""
