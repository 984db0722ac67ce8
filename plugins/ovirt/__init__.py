"""oVirt plugin: import pools, scopes and in-use MACs from legacy oVirt/RHV exports."""
