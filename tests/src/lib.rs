//! Shared helpers for stridemap's cross-crate tests: the conformance vectors and the
//! re-executing child-process harness.

pub mod child;
pub mod vectors;
