"""Timing loops and the probes around them (memory high-water marks, CPU noise)."""
