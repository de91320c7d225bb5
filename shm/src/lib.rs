//! stridemap segments, producer side: where they live, who may read them, when they go away.
//! A producer's Cargo.toml names this one crate: it re-exports what a producer needs from
//! `stridemap` (views, dtypes, layouts, the socket and message types), and what a program
//! that also consumes needs ([`OpenOptions`], [`Mapping`]); [`prelude`] brings the common
//! ones in one `use`.
//!
//! A [`Pool`] puts arrays in segments — named files in a private folder (any process and
//! language opens them by path) or sealed memfds passed as fds — either allocated in place
//! ([`Pool::alloc`], no copy at all) or written once from existing data ([`Pool::share`],
//! [`Pool::share_arc`] which reuses the segment of an `Arc` it already shared). Consumers
//! receive a descriptor ([`SharedArray::send`], then `stridemap::socket::recv`) and map the
//! same pages with the `stridemap` crate.
//!
//! Lifetime follows SPEC.md §7: every process that maps a segment holds a shared `flock` on
//! it; the producer deletes or recycles a segment only when it can lock it exclusively, so a
//! reader is never cut off, and a descriptor of a recycled segment is refused (the segment
//! header's generation moved on). A pool holds a shared lock on its folder for its whole life and
//! removes the folder when it is dropped; folders nobody holds locked (their producer died)
//! are swept ([`sweep`], through directory fds, only the caller's own) when the next pool
//! starts. Space is checked
//! against each request before anything is written, with an error that says what to do.
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use stridemap_shm::{OpenOptions, Order, Pool, PoolConfig, SegmentKind, Slice, socket};
//!
//! let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
//! let mut a = pool.alloc::<f64>(&[4, 3], Order::C)?;
//! let data: Vec<f64> = (0..12).map(f64::from).collect();
//! a.copy_from_slice(&data)?; // one memcpy into the segment, no reference to it
//! let a = a.freeze()?;
//!
//! // The consumer (another process, usually) gets the descriptor and a sealed fd.
//! let (tx, rx) = UnixStream::pair()?;
//! a.send(&tx)?;
//! let m = OpenOptions::new().open(socket::recv(&rx)?)?;
//! assert!(m.is_frozen()); // a sealed memfd: views lend references
//! let col = m.view::<f64>()?.index_axis(1, 2)?.slice_axis(0, Slice::REVERSED)?;
//! assert_eq!(col.to_vec(), [11.0, 8.0, 5.0, 2.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Numbers follow `stridemap`'s convention: shapes and indices in memory are `usize`
//! ([`Pool::alloc`]), layouts, descriptors and byte counts `u64` (the wire's), and only
//! strides and slices are signed.
//!
//! # Soundness
//!
//! The producer's map of a segment lends references only where the kernel lets nobody else
//! write it: a [`SharedArray`] that [`is_frozen`](SharedArray::is_frozen), a memfd that
//! [`SharedArrayMut::freeze`] sealed `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` after
//! dropping its writable map, and mapped again read-only. The kernel grants that seal only
//! when no writable map exists anywhere and refuses every writer after, so such a segment is
//! never written again, and never recycled. Before that, a [`SharedArrayMut`] (from
//! [`Pool::alloc`]) lends none, a memfd's included: any process of this user (or root) can
//! open `/proc/<pid>/fd/N` for writing and map it, and a writable map made before a seal
//! outlives it. The producer fills it through copies
//! ([`copy_from_slice`](SharedArrayMut::copy_from_slice), [`fill`](SharedArrayMut::fill), one
//! memcpy) or `stridemap`'s [`VolatileViewMut`]; if another process still maps it writable,
//! `freeze` is refused (the kernel's `EBUSY`). Everything else is read through `stridemap`'s
//! [`VolatileView`] (element copies, no reference): named files (every process of this user
//! can open them for writing, and mode 0400 does not stop root), arrays
//! [published](SharedArrayMut::publish) unfrozen into segments the pool recycles (the
//! streaming fast path), and arrays consumers write ([`OutputArray`], from
//! [`Pool::alloc_output`], also written through [`VolatileViewMut`]). The handles are one type
//! per stage, so the compiler enforces the rest: a [`SharedArrayMut`] has no `as_mut_slice` or
//! `view`, an [`OutputArray`] has no `view_mut`, and the one way to a slice of an unfrozen
//! segment is the `unsafe` [`SharedArrayMut::as_mut_slice_unchecked`].
//! A named file truncated by another process of this user (or root) makes the next access to
//! its lost pages crash with `SIGBUS`, on the producer's side (a fill, a volatile view, an
//! [`OutputArray`]) as on the consumers': a crash, not undefined behaviour; memfds are sealed
//! against shrinking.
//! Consumers get references only for frozen memfds (see `stridemap`'s Soundness section).
//!
//! # Platform
//!
//! Linux only (a `compile_error!` elsewhere). Memfd segments need `memfd_create` with sealing
//! (Linux 3.17) and, to publish them unfrozen, `F_SEAL_FUTURE_WRITE` (Linux 5.1): without
//! it, publishing a memfd segment fails with [`Error::Unsupported`], while named-file
//! segments ([`SegmentKind::File`], the default) need neither. Recycled segments are
//! prefaulted with `MADV_POPULATE_WRITE` (Linux 5.14); older kernels ignore it and the pages
//! fault in on first write instead.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Linux only: memfd seals, openat2, /proc/self/fd and flock on shared files have no portable
// equivalent here. `stridemap-core` (the descriptor alone) builds everywhere, no_std included.
#[cfg(target_os = "macos")]
compile_error!(
    "stridemap-shm supports Linux only, and this target is macOS; stridemap-core (the descriptor alone) builds here"
);
#[cfg(windows)]
compile_error!(
    "stridemap-shm supports Linux only, and this target is Windows; stridemap-core (the descriptor alone) builds here"
);
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "stridemap-shm supports Linux only, and this target's OS is not Linux; stridemap-core (the descriptor alone) builds here"
);

mod admit;
mod array;
mod error;
mod huge;
mod message;
mod pool;
pub mod prelude;
mod segment;
mod sender;
mod source;
mod sweep;
mod sys;
mod temp;

pub use array::{OutputArray, SharedArray, SharedArrayMut, Untyped};
pub use error::{Error, Result};
pub use huge::{
    Candidate, HugePages, HugeProbe, PageBacking, huge_page_bytes, huge_probe,
    mapping_huge_page_bytes,
};
pub use message::Outgoing;
pub use pool::{Pool, PoolConfig, PoolStats, SegmentKind};
pub use sender::Sender;
pub use source::ShareSource;
pub use stridemap::__producer_policy::segment_bases;
pub use sweep::{Kept, SweepOptions, SweepReport, sweep, sweep_with};
pub use temp::spare_space;

pub use stridemap::message::{ArrayMessage, Received};
pub use stridemap::{
    Builder, ByteView, DType, Element, Kind, Layout, Mapping, Mode, OpenOptions, Order, Slice,
    ValidDescriptor, View, ViewError, ViewMut, VolatileView, VolatileViewMut, decode_any, socket,
};
#[allow(deprecated)]
#[doc(hidden)]
pub use stridemap::{SharedView, SharedViewMut};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
