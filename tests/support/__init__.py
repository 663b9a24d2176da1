"""What the tests share: emulator fixtures (pytest plugins registered in ``tests/conftest.py``),
harnesses and helpers. Benchmarks (``bench/``) may import these; product code never does."""
