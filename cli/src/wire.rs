//! The little protocol between the producer (demo, bench) and its worker processes, over a
//! Unix stream socket: a one-byte tag, fixed-size integers, descriptors as fixed records with
//! their fd (SPEC.md §6.1), and a one-byte acknowledgement.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::{CliResult, Failure};

/// Map descriptor `id` (a u32 follows, then the descriptor and its fd).
pub(crate) const VIEW: u8 = b'V';
/// Map descriptor `id` through the worker's session (a u32 follows, then the release records
/// due and the descriptor, its fd only the first time the connection gets its segment).
pub(crate) const SESSION_VIEW: u8 = b'W';
/// Release records follow (a u32 count, then the records): the session lets go.
pub(crate) const RELEASE: u8 = b'R';
/// Map the output descriptor `r+` (the descriptor and its fd follow).
pub(crate) const OUTPUT: u8 = b'O';
/// Sum view `id` (u32) into output slot `slot` (u64).
pub(crate) const TASK: u8 = b'T';
/// Forget view `id` (u32): unmap it.
pub(crate) const DROP: u8 = b'D';
/// `len` (u64) bytes follow; read them all.
pub(crate) const BULK: u8 = b'B';
/// A u32 and 1024 bytes follow (a descriptor-sized message framed as [`VIEW`], nothing else).
pub(crate) const PING: u8 = b'P';
/// Exit.
pub(crate) const QUIT: u8 = b'Q';
/// Success.
pub(crate) const ACK: u8 = b'k';
/// Failure: a u32 length and a UTF-8 message follow.
pub(crate) const ERR: u8 = b'e';

fn io(e: std::io::Error) -> Failure {
    Failure::other(format!("worker connection: {e}"))
}

pub(crate) fn put(s: &UnixStream, bytes: &[u8]) -> CliResult {
    (&*s).write_all(bytes).map_err(io)
}

pub(crate) fn put_u32(s: &UnixStream, v: u32) -> CliResult {
    put(s, &v.to_le_bytes())
}

pub(crate) fn put_u64(s: &UnixStream, v: u64) -> CliResult {
    put(s, &v.to_le_bytes())
}

pub(crate) fn get(s: &UnixStream, buf: &mut [u8]) -> CliResult {
    (&*s).read_exact(buf).map_err(io)
}

pub(crate) fn get_u8(s: &UnixStream) -> CliResult<u8> {
    let mut b = [0u8; 1];
    get(s, &mut b)?;
    Ok(b[0])
}

pub(crate) fn get_u32(s: &UnixStream) -> CliResult<u32> {
    let mut b = [0u8; 4];
    get(s, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

pub(crate) fn get_u64(s: &UnixStream) -> CliResult<u64> {
    let mut b = [0u8; 8];
    get(s, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Waits for the worker's answer: an acknowledgement, or its error message.
pub(crate) fn ack(s: &UnixStream) -> CliResult {
    match get_u8(s)? {
        ACK => Ok(()),
        ERR => {
            let n = get_u32(s)? as usize;
            let mut msg = vec![0u8; n.min(1 << 16)];
            get(s, &mut msg)?;
            Err(Failure::other(format!(
                "worker: {}",
                String::from_utf8_lossy(&msg)
            )))
        }
        other => Err(Failure::other(format!("worker sent {other:#x}"))),
    }
}

/// Sends an error answer.
pub(crate) fn nak(s: &UnixStream, message: &str) {
    let bytes = message.as_bytes();
    let _ = put(s, &[ERR]);
    let _ = put_u32(s, bytes.len() as u32);
    let _ = put(s, bytes);
}
