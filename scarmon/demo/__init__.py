"""The offline demo and the synthetic Sentinel-2 L2A generator behind it, the tests and the benchmarks."""
