"""Tests of the pure domain core (manager.core)."""
