//! Arrays in messages: small ones inline, large ones as a segment's compact descriptor
//! (joblib's `max_nbytes`), in one serde type that producer and consumer share.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};
use stridemap_core::{CompactDescriptor, DType};

use crate::{
    ByteView, Element, Mapping, OpenOptions, OwnedArray, Result, View, ViewResult, VolatileView,
};

/// An array as a message carries it: the bytes themselves when small, else the compact
/// descriptor of the segment that holds them (a producer makes one with stridemap-shm's
/// `Pool::message`).
///
/// ```
/// use stridemap::message::ArrayMessage;
/// let msg = ArrayMessage::Inline { dtype: "|u1".into(), shape: vec![2, 2], data: vec![1, 2, 3, 4] };
/// let wire = postcard::to_allocvec(&msg).unwrap();
/// let back: ArrayMessage = postcard::from_bytes(&wire).unwrap();
/// let got = stridemap::OpenOptions::new().open(&back)?; // inline: no fd
/// assert_eq!(got.view::<u8>()?.to_vec(), [1, 2, 3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "the compact descriptor is inline by design (no allocation); messages are moved rarely"
)]
pub enum ArrayMessage {
    /// The elements themselves, packed in C order.
    Inline {
        /// numpy typestr.
        dtype: String,
        /// Length of each axis (`u64`, as on the wire).
        shape: Vec<u64>,
        /// The elements' bytes.
        data: Vec<u8>,
    },
    /// A shared segment's descriptor (its fd, for a memfd, travels beside the message).
    Shared(CompactDescriptor),
}

/// A received array: a copy this process owns (inline) or a mapping (shared).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a received array is made once and kept; boxing the mapping buys nothing"
)]
pub enum Received {
    /// An inline array, copied into this process.
    Owned(OwnedArray),
    /// A mapped segment.
    Mapped(Mapping),
}

impl ArrayMessage {
    /// Turns the message into an array.
    #[deprecated(note = "use OpenOptions::open, the one open: `opts.open((&msg, fd))`")]
    #[doc(hidden)]
    pub fn open(&self, fd: Option<OwnedFd>, opts: &OpenOptions) -> Result<Received> {
        receive(self, fd, opts)
    }
}

/// [`OpenOptions::open`] of a message: inline bytes are checked and copied, a shared
/// descriptor is validated and opened under `opts` (with `fd` for a memfd).
pub(crate) fn receive(
    msg: &ArrayMessage,
    fd: Option<OwnedFd>,
    opts: &OpenOptions,
) -> Result<Received> {
    match msg {
        ArrayMessage::Inline { dtype, shape, data } => Ok(Received::Owned(OwnedArray::from_bytes(
            DType::parse(dtype)?,
            crate::view::as_usizes(shape),
            data,
        )?)),
        ArrayMessage::Shared(c) => {
            let desc = c.validate()?;
            opts.open((&desc, fd)).map(Received::Mapped)
        }
    }
}

impl Received {
    /// A typed view lending `&T`s: always for an owned array; for a mapping, as
    /// [`Mapping::view`] (frozen, or promised).
    ///
    /// # Errors
    /// Those of [`OwnedArray::view`] or [`Mapping::view`].
    pub fn view<T: Element>(&self) -> ViewResult<View<'_, T>> {
        match self {
            Received::Owned(a) => a.view(),
            Received::Mapped(m) => m.view(),
        }
    }

    /// A typed view that copies elements out: works for every received array.
    ///
    /// # Errors
    /// Those of [`Mapping::volatile_view`] (a dtype other than `T`'s).
    pub fn volatile_view<T: Element>(&self) -> ViewResult<VolatileView<'_, T>> {
        match self {
            Received::Owned(a) => Ok(a.view()?.as_volatile()),
            Received::Mapped(m) => m.volatile_view(),
        }
    }

    /// A byte view: as [`Received::view`], for any dtype.
    ///
    /// # Errors
    /// Those of [`Mapping::byte_view`].
    pub fn byte_view(&self) -> ViewResult<ByteView<'_>> {
        match self {
            Received::Owned(a) => a.byte_view(),
            Received::Mapped(m) => m.byte_view(),
        }
    }

    /// The array as one this process owns (a copy of a mapping's elements).
    ///
    /// # Errors
    /// Those of [`Mapping::copy_array`].
    pub fn into_owned(self) -> ViewResult<OwnedArray> {
        match self {
            Received::Owned(a) => Ok(a),
            Received::Mapped(m) => m.copy_array(),
        }
    }
}
