"""The engine: plain functions that compose components of each kind into a detection run."""
