"""Benchmarks: agentfleet measured side by side with the baseline it replaces, as ratios."""
