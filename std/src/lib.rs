//! Open stridemap descriptors: the consumer side of zero-copy array sharing. A consumer's
//! Cargo.toml names this one crate (it re-exports the descriptor layer's types), and
//! [`prelude`] brings the common names in one `use`.
//!
//! A producer sends a [`ValidDescriptor`]'s bytes (over a Unix socket with [`socket`], or in
//! any message: [`decode_any`] reads both forms, [`message`] carries small arrays inline);
//! this crate checks the file it names under a trust policy and maps exactly its enclosing
//! buffer ([`OpenOptions::open`], the one way in, for every kind of descriptor and message),
//! and hands out bounds-checked strided views with numpy's `as_strided` semantics. Views
//! slice with any step, transpose, reshape, and describe themselves again as descriptors of
//! the same file. [`npy`] reads and
//! writes `.npy` files; the `ndarray` feature converts views to `ndarray` views, the
//! documented way to compute on them.
//!
//! ```
//! use std::io::Write;
//! use stridemap::{Builder, DType, OpenOptions, Slice, decode_any};
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
//! // A consumer that allows that folder opens it and sees the elements in reverse. The file
//! // is path-named (anyone allowed can rewrite it), so the view copies elements out.
//! let desc = decode_any(&wire)?;
//! let opts = OpenOptions::new().allow_root(dir.path());
//! let m = opts.open(&desc)?;
//! let v = m.volatile_view::<f64>()?;
//! assert_eq!((v.get(&[0])?, v.get(&[999])?), (999.0, 0.0));
//! // Any sub-view describes itself again, here m[::-1][500:490:-1] = m[499:509].
//! let w = v.slice_axis(0, Slice::new(Some(500), Some(490), -1))?;
//! let again = opts.open(&w.describe()?)?;
//! assert_eq!(again.volatile_view::<f64>()?.to_vec(), (499..509).map(f64::from).collect::<Vec<_>>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Words
//!
//! One word, one meaning, here and in stridemap-shm: *shared* is what processes share (a
//! segment, stridemap-shm's `SharedArray`, a [`Mapping`] of one); *frozen* memory is sealed
//! so that nobody can write it again, and only it (or memory this process owns) backs the
//! views that lend references, [`View`] and [`ViewMut`]; *volatile* views,
//! [`VolatileView`] and [`VolatileViewMut`], lend none and copy each element in or out, for
//! memory others may write.
//!
//! # Numbers
//!
//! One convention for every number in the API:
//!
//! - **In memory, `usize`**: the shapes, lengths, indices and axes of views, of owned arrays
//!   and of stridemap-shm's handles (`Pool::alloc` takes a `&[usize]` shape), as for slices.
//! - **On the wire and on disk, `u64`**: a [`Layout`], a descriptor and its [`Builder`], an
//!   inline [`ArrayMessage`](message::ArrayMessage), a `.npy` header, and the byte counts of
//!   files and segments. A view's [`shape`](View::shape) is its
//!   [`layout`](View::layout)'s, as `usize`.
//! - **Signed (`i64`) only where a sign means something**: strides in bytes (negative for a
//!   reversed axis) and [`Slice`] bounds and steps (negative bounds count from the end,
//!   negative steps walk backwards); [`Slice::between`] takes `usize` positions.
//!
//! `usize` and `u64` are one size on the 64-bit targets this crate builds for, so converting
//! between them loses nothing; a `usize` position made an `i64` saturates at `i64::MAX`,
//! past the end of any axis, which selects the same elements. No conversion panics.
//!
//! # Soundness
//!
//! A mapped file is memory other processes can change. Safe code in this crate never holds a
//! reference (`&T`, `&mut T`, a slice) to bytes that can change while the reference lives:
//!
//! - **References where the kernel guarantees them.** [`Mapping::view`], [`Mapping::view_mut`],
//!   [`Mapping::byte_view`] and [`Mapping::bytes`] lend references only if the mapping
//!   [`is_frozen`](Mapping::is_frozen): the file this process maps (checked with
//!   `F_GET_SEALS` on the fd it holds, never taken from the descriptor's word) is sealed
//!   with `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, as stridemap-shm's frozen memfds are.
//!   The kernel adds `F_SEAL_WRITE` only when no writable map of the file exists, and then
//!   refuses every writer, so no promise of the producer's is taken. `F_SEAL_FUTURE_WRITE`
//!   is not enough: a map made before it stays writable, so such a file gets
//!   [`VolatileView`]s like any other (SPEC.md §9 says what a producer must seal). Arrays
//!   this process owns ([`OwnedArray`]: [`Mapping::copy_array`], inline messages) and views
//!   of the caller's own buffers ([`View::new`]) lend references too. A copy-on-write (`c`)
//!   mapping is not a private copy: pages not yet written still show the file's later writes,
//!   so it counts as frozen only when the file is sealed.
//! - **Copies everywhere else.** Path-named files, unsealed fds and `r+` outputs get
//!   [`VolatileView`] and [`VolatileViewMut`] ([`Mapping::volatile_view`],
//!   [`Mapping::volatile_view_mut`]): every element is read or written with one volatile access
//!   through a raw pointer, bulk copies go to or from the caller's memory, and no reference
//!   to the mapped bytes is made, so another process writing them changes values, never the
//!   program's soundness. An element written concurrently elsewhere may be read torn. Workers
//!   that fill disjoint parts of one shared output use [`VolatileViewMut`], whose
//!   [`split_axis`](VolatileViewMut::split_axis) and [`axis_chunks`](VolatileViewMut::axis_chunks)
//!   give threads disjoint writers.
//! - **The opt-in.** A caller who knows no one else writes a non-frozen file may say so in one
//!   place, [`Mapping::assume_no_outside_writes`], an `unsafe fn` whose `# Safety` section is
//!   memmap2's contract. Then the reference-lending views work on that mapping.
//!
//! What no check rules out (the README's trust model): a producer that truncates a
//! path-named file after it was mapped makes the reader fault (SIGBUS) on access; fd-passed
//! files must be sealed against shrinking (O9) and segments are locked while mapped (§7).
//!
//! A non-frozen mapping cannot lend a slice without the opt-in: [`VolatileView`] has no
//! `as_slice`, and its elements come by value.
//!
//! ```compile_fail,E0599
//! # fn f(m: &stridemap::Mapping) -> stridemap::Result<()> {
//! let s: &[f64] = m.volatile_view::<f64>()?.as_slice().unwrap();
//! # Ok(()) }
//! ```
//!
//! Nor can a view outlive its mapping:
//!
//! ```compile_fail,E0505
//! # fn f(m: stridemap::Mapping) -> stridemap::Result<()> {
//! let v = m.volatile_view::<f64>()?;
//! drop(m);
//! v.get(&[0])?;
//! # Ok(()) }
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

// Sizes and indices are `usize` in the API and `u64` on the wire and in `Layout`: the views
// convert between them without a copy, which needs the two to be one type in all but name.
#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "stridemap supports 64-bit Linux only (sizes are usize in its API and u64 on the wire); stridemap-core (the descriptor alone) builds here"
);

mod decode;
mod element;
mod error;
mod mapping;
pub mod message;
#[cfg(feature = "ndarray")]
#[path = "ndarray.rs"]
mod ndarray_interop;
pub mod npy;
mod open;
mod options;
mod owned;
pub mod prelude;
mod resolve;
mod session;
pub mod socket;
mod sys;
mod view;

pub use decode::decode_any;
pub use element::Element;
pub use error::{Error, Result, Unaligned, ViewError, ViewResult};
pub use mapping::Mapping;
pub use open::Openable;
#[allow(deprecated)]
pub use open::{open, open_fd, open_source};
pub use options::OpenOptions;
pub use owned::OwnedArray;
pub use view::{
    ByteView, Iter, IterMut, View, ViewMut, VolatileIter, VolatileView, VolatileViewMut,
};

/// The old name of [`VolatileView`]: "shared" now means only what is shared between
/// processes (a segment, stridemap-shm's `SharedArray`), never a kind of view.
#[deprecated(note = "renamed VolatileView (views that copy elements in and out)")]
#[doc(hidden)]
pub type SharedView<'a, T> = VolatileView<'a, T>;
/// The old name of [`VolatileViewMut`].
#[deprecated(note = "renamed VolatileViewMut (views that copy elements in and out)")]
#[doc(hidden)]
pub type SharedViewMut<'a, T> = VolatileViewMut<'a, T>;
/// The old name of [`VolatileIter`].
#[deprecated(note = "renamed VolatileIter")]
#[doc(hidden)]
pub type SharedIter<'a, T> = VolatileIter<'a, T>;

/// The descriptor layer's errors: [`DecodeError`] for a descriptor that breaks a SPEC rule
/// (inside [`Error::Descriptor`]), [`LayoutError`] for an impossible layout operation (inside
/// [`ViewError::Layout`]), and the small errors of encoding, segment headers and names.
pub use stridemap_core::{
    BufferTooSmall, DecodeError, LayoutError, ParseNameError, ReleaseError, SegmentHeaderError,
};
/// The descriptor layer's types, so that a consumer names this one crate.
pub use stridemap_core::{
    Builder, ByteOrder, CompactDescriptor, DType, Kind, Layout, Mode, Offsets, Order, RECORD_LEN,
    RELEASE_MAGIC, Release, Slice, Source, TypeStr, ValidDescriptor,
};

/// `ndarray`, whose types appear in this crate's signatures with the `ndarray` feature.
#[cfg(feature = "ndarray")]
pub use ::ndarray;

/// Where stridemap-shm producers put their segment folders (`$STRIDEMAP_TEMP_FOLDER`,
/// `/dev/shm`, the system temp dir) and how they name them (`stridemap-<pid>-<start>-<uuid>`):
/// the producer's policy, which the consumer's default roots follow. Shared with
/// stridemap-shm; not part of this crate's API.
#[doc(hidden)]
pub mod __producer_policy {
    pub use crate::options::{SEGMENT_FOLDER_PREFIX, TEMP_FOLDER_ENV, segment_bases};
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
