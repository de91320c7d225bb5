//! Arrays in messages (joblib's `max_nbytes`): small ones inline, large ones as a segment's
//! compact descriptor. The message type, [`ArrayMessage`], lives in the consumer crate.

use stridemap::ByteView;
use stridemap::message::ArrayMessage;

use crate::{Pool, Result, SharedArray};

/// A message to send, and the handle that keeps its segment alive until the receiver is
/// done with it (drop it when the receiver has answered).
///
/// ```
/// use stridemap_shm::{ArrayMessage, ByteView, DType, Layout, Order, Pool, PoolConfig};
/// let pool = Pool::with_config(PoolConfig::default().sweep_on_start(false))?;
/// let data = [1u8, 2, 3, 4];
/// let v = ByteView::new(&data, Layout::contiguous(1, &[2, 2], Order::C)?, DType::parse("|u1")?)?;
/// let out = pool.message(&v)?;
/// assert!(matches!(out.message, ArrayMessage::Inline { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
                shape: view.layout().shape().to_vec(),
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
