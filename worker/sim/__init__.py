"""Simulated people: objectives that stand in for true PIR, and observation models."""
