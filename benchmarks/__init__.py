"""The benchmark harness: our VAE against public MNIST VAE examples, at equal training time.

Not part of the library or the test suite: run it with `make bench` (see docs/benchmark.md).
"""
