//! Shared helpers for stridemap's cross-crate tests: where the test vectors live and how they
//! are written down.

pub mod vectors;
