//! Shared parts of stridemap's fuzz targets.
//!
//! - [`model`]: the naive model of a strided array (every element enumerated, exact
//!   arithmetic) and the check that a [`Layout`](stridemap_core::Layout) keeps every claim
//!   inside a real buffer;
//! - [`spec`]: SPEC.md's two wire forms written from the document alone, and [`rules`]: its
//!   validation rules taken literally, in order — the references the decoders are compared
//!   with;
//! - [`roundtrip`]: what every valid descriptor must survive (both encodings, the builder).
//!
//! Each target under `fuzz_targets/` is one entry point that takes outside bytes; a new one
//! is a file there plus a `[[bin]]` in `Cargo.toml` (and seeds in `seed-corpora.sh` if it
//! reads descriptors).

pub mod model;
pub mod roundtrip;
pub mod rules;
pub mod spec;
