"""Test support that ships with the library, as SGLang ships ``sglang.test``: the tiny model pair
(:mod:`.tiny_models`) that the test suite, the GPU smoke check and the small benchmarks run
real SGLang servers on.  Nothing else in the package imports it."""
