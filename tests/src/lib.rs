//! End-to-end tests of the `tiergate` binary live in `tests/tests/`.
