//! Open stridemap descriptors: the consumer side of zero-copy array sharing.
//!
//! A producer sends a [`ValidDescriptor`](stridemap_core::ValidDescriptor)'s bytes; this
//! crate checks the file it names under a trust policy ([`OpenOptions`]), maps exactly its
//! enclosing buffer ([`open`], [`open_fd`]) and hands out bounds-checked strided views with
//! numpy's `as_strided` semantics: typed ([`View`], [`ViewMut`]) or byte-level
//! ([`ByteView`]). Views slice with any step, transpose, reshape, and describe themselves
//! again as descriptors of the same file. [`npy`] reads and writes `.npy` files; the
//! `ndarray` feature converts views to `ndarray` views.
//!
//! ```
//! use std::io::Write;
//! use stridemap::{OpenOptions, open};
//! use stridemap_core::{Builder, DType, Slice};
//!
//! // A producer wrote 1000 doubles to a file and describes them reversed (m[::-1]).
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().canonicalize()?.join("m.f64");
//! let data: Vec<f64> = (0..1000).map(f64::from).collect();
//! std::fs::File::create(&path)?.write_all(bytemuck::cast_slice(&data))?;
//! let whole = Builder::new(DType::parse("<f8")?, &[1000]).path(path.to_str().unwrap()).build()?;
//! let reversed = whole.layout().slice_axis(0, Slice::REVERSED)?;
//! let wire = whole.to_builder().layout(&reversed).build()?.to_bytes();
//!
//! // A consumer that allows that folder opens it and sees the elements in reverse.
//! let desc = stridemap_core::decode(&wire)?;
//! let m = open(&desc, &OpenOptions::new().allow_root(dir.path()))?;
//! let v = m.view::<f64>()?;
//! assert_eq!((v.get(&[0])?, v.get(&[999])?), (&999.0, &0.0));
//! // Any sub-view describes itself again, here m[::-1][500:490:-1] = m[499:509].
//! let w = v.slice_axis(0, Slice::new(Some(500), Some(490), -1))?;
//! let again = open(&w.describe()?, &OpenOptions::new().allow_root(dir.path()))?;
//! assert_eq!(again.view::<f64>()?.to_vec(), (499..509).map(f64::from).collect::<Vec<_>>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform
//!
//! Linux only (a `compile_error!` elsewhere; the descriptor alone, `stridemap-core`, builds
//! anywhere). Paths are resolved with `openat2` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
//! (Linux 5.6); on older kernels, or where a seccomp filter refuses `openat2`, with a walk of
//! `O_NOFOLLOW` opens that makes the same checks. Seals are read with `F_GET_SEALS` (memfds,
//! Linux 3.17).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Linux only: memfd seals, openat2, /proc/self/fd and flock on shared files have no portable
// equivalent here. `stridemap-core` (the descriptor alone) builds everywhere, no_std included.
#[cfg(target_os = "macos")]
compile_error!(
    "stridemap supports Linux only, and this target is macOS; stridemap-core (the descriptor alone) builds here"
);
#[cfg(windows)]
compile_error!(
    "stridemap supports Linux only, and this target is Windows; stridemap-core (the descriptor alone) builds here"
);
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "stridemap supports Linux only, and this target's OS is not Linux; stridemap-core (the descriptor alone) builds here"
);

mod element;
mod error;
mod mapping;
#[cfg(feature = "ndarray")]
mod ndarray;
pub mod npy;
mod open;
mod options;
mod resolve;
mod sys;
mod view;

pub use element::Element;
pub use error::{Error, Result};
pub use mapping::Mapping;
pub use open::{open, open_fd};
pub use options::{OpenOptions, SEGMENT_FOLDER_PREFIX, TEMP_FOLDER_ENV, segment_bases};
pub use view::{ByteView, Iter, View, ViewMut};

pub use stridemap_core as core;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
