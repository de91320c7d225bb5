//! Arrays in messages: small ones inline, large ones as a segment's compact descriptor
//! (joblib's `max_nbytes`), in one serde type.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};
use stridemap::{ByteView, Element, Mapping, OpenOptions, View};
use stridemap_core::{CompactDescriptor, DType, Layout, Order, Source};

use crate::{Pool, Result, SharedArray};

/// An array as a message carries it: the bytes themselves when small, else the compact
/// descriptor of the segment that holds them.
///
/// ```
/// use stridemap_shm::{ArrayMessage, Pool, PoolConfig};
/// use stridemap::ByteView;
/// use stridemap_core::{DType, Layout, Order};
/// let pool = Pool::with_config(PoolConfig::default().sweep_on_start(false))?;
/// let data = [1u8, 2, 3, 4];
/// let v = ByteView::new(&data, Layout::contiguous(1, &[2, 2], Order::C)?, DType::parse("|u1")?)?;
/// let out = pool.message(&v)?;
/// assert!(matches!(out.message, ArrayMessage::Inline { .. }));
/// let wire = postcard::to_allocvec(&out.message).unwrap();
/// let back: ArrayMessage = postcard::from_bytes(&wire).unwrap();
/// let got = back.receive(None, &stridemap::OpenOptions::new())?;
/// assert_eq!(got.byte_view()?.to_contiguous(), data);
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
        /// Length of each axis.
        shape: Vec<u64>,
        /// The elements' bytes.
        data: Vec<u8>,
    },
    /// A shared segment's descriptor (its fd, for a memfd, travels beside the message).
    Shared(CompactDescriptor),
}

/// A message to send, and the handle that keeps its segment alive until the receiver is
/// done with it (drop it when the receiver has answered).
#[derive(Debug)]
pub struct Outgoing {
    /// What to send.
    pub message: ArrayMessage,
    /// The shared segment, if the array did not go inline.
    pub keep: Option<SharedArray>,
}

pub(crate) fn outgoing(pool: &Pool, view: &ByteView<'_>) -> Result<Outgoing> {
    if view.layout().nbytes() <= pool.config().max_nbytes {
        return Ok(Outgoing {
            message: ArrayMessage::Inline {
                dtype: view.dtype().typestr().as_str().to_string(),
                shape: view.shape().to_vec(),
                data: view.to_contiguous(),
            },
            keep: None,
        });
    }
    let shared = pool.share(view)?;
    Ok(Outgoing {
        message: ArrayMessage::Shared(shared.descriptor().to_compact()),
        keep: Some(shared),
    })
}

/// A received array: copied bytes (inline) or a mapping (shared).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a received array is made once and kept; boxing the mapping buys nothing"
)]
pub enum Received {
    /// An inline array, its bytes in an 8-byte-aligned buffer (so typed views work).
    Inline {
        /// The element type.
        dtype: DType,
        /// C-contiguous layout over `words`.
        layout: Layout,
        /// The bytes, in `u64` words for alignment.
        words: Vec<u64>,
    },
    /// A mapped segment.
    Mapped(Mapping),
}

impl ArrayMessage {
    /// Turns the message into an array: inline bytes are checked and kept, a shared
    /// descriptor is validated and opened under `opts` (with `fd` for a memfd).
    pub fn receive(&self, fd: Option<OwnedFd>, opts: &OpenOptions) -> Result<Received> {
        match self {
            ArrayMessage::Inline { dtype, shape, data } => {
                let dtype = DType::parse(dtype)?;
                let layout = Layout::contiguous(dtype.itemsize(), shape, Order::C)?;
                if layout.nbytes() != data.len() as u64 {
                    return Err(stridemap::Error::NotInMapping.into());
                }
                let mut words = vec![0u64; data.len().div_ceil(8)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..data.len()].copy_from_slice(data);
                Ok(Received::Inline {
                    dtype,
                    layout,
                    words,
                })
            }
            ArrayMessage::Shared(c) => {
                let desc = c.validate()?;
                let m = match (desc.source(), fd) {
                    (Source::Fd, Some(fd)) => stridemap::open_fd(&desc, fd, opts)?,
                    (Source::Path, None) => stridemap::open(&desc, opts)?,
                    _ => return Err(stridemap::Error::MissingFd.into()),
                };
                Ok(Received::Mapped(m))
            }
        }
    }
}

impl Received {
    /// The array as a byte view.
    pub fn byte_view(&self) -> Result<ByteView<'_>> {
        match self {
            Received::Inline {
                dtype,
                layout,
                words,
            } => Ok(ByteView::new(bytemuck::cast_slice(words), *layout, *dtype)?),
            Received::Mapped(m) => Ok(m.byte_view()?),
        }
    }

    /// The array as a typed view.
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        Ok(self.byte_view()?.typed::<T>()?)
    }
}
