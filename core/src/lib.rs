//! The stridemap descriptor: a small, fixed-layout, validated description of a strided
//! array that lives in a file or shared-memory segment.
//!
//! A producer describes where an array's bytes are (path or fd, dtype, shape, strides,
//! offsets, buffer, mode, the file's identity); a consumer in any process or language
//! validates the description and maps the bytes. This crate is the pure part: the
//! [`Record`] (1024 little-endian bytes, readable in place with zerocopy), the [`DType`],
//! the [`Layout`] arithmetic with numpy's `as_strided` semantics, validation into a
//! [`ValidDescriptor`], a [`Builder`], and, with the `serde` feature, the compact form.
//! It is `no_std`, needs no allocator, has no `unsafe`, never panics on any input (clippy's
//! `arithmetic_side_effects` and `indexing_slicing` are denied), and builds on any target.
//! SPEC.md in the repository is the contract; every rule there is one [`DecodeError`] variant; layout operations fail with a
//! [`LayoutError`].
//!
//! ```
//! use stridemap_core::{Builder, DType, Slice, decode};
//!
//! // Producer: a 1000×3 f64 array at the start of a segment, described as its reversed rows.
//! let whole = Builder::new(DType::parse("<f8")?, &[1000, 3]).path("/dev/shm/seg").build()?;
//! let reversed = whole.layout().slice_axis(0, Slice::REVERSED)?;
//! let bytes = whole.to_builder().layout(&reversed).build()?.to_bytes();
//!
//! // Consumer: untrusted bytes in, a descriptor whose every element is in bounds out.
//! let d = decode(&bytes)?;
//! assert_eq!((d.shape(), d.strides(), d.offset()), (&[1000, 3][..], &[-24, 8][..], 23976));
//! assert_eq!(d.span(), 0..24000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

#[cfg(test)]
extern crate std;

mod builder;
#[cfg(feature = "serde")]
mod compact;
mod crc;
mod dtype;
mod error;
mod flags;
mod iter;
mod layout;
mod record;
mod release;
mod segment;
mod slice;
mod validate;

pub use builder::Builder;
#[cfg(feature = "serde")]
pub use compact::{
    COMPACT_MAGIC, COMPACT_MAX_LEN, CompactDescriptor, CompactSource, decode_compact,
};
pub use dtype::{ByteOrder, DType, Kind, MAX_VOID_ITEMSIZE, TypeStr};
pub use error::{
    BufferTooSmall, DecodeError, LayoutError, ParseNameError, ReleaseError, SegmentHeaderError,
};
pub use flags::{Mode, Order, Source};
pub use iter::Offsets;
pub use layout::{Layout, MAX_BYTES};
pub use record::{
    MAGIC, MAX_NDIM, PATH_CAPACITY, RECORD_LEN, Record, VERSION_MAJOR, VERSION_MINOR, offsets,
};
pub use release::{RELEASE_MAGIC, Release};
pub use segment::{SEGMENT_DATA_OFFSET, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SegmentHeader};
pub use slice::Slice;
pub use validate::{ValidDescriptor, decode};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
