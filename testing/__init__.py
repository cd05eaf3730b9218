"""Helpers the tests and the benchmarks share (namespace SSH hosts, a container engine and registry): test
equipment, not part of ernie; benchmarks import it from here rather than from tests/."""
