//! Carrying a stridemap record inside your own wire message, read in place with zerocopy.
//!
//! A worker protocol has its own header (a request id, a kind) and wants to ship an array
//! descriptor in the same datagram. The message is a `#[repr(C)]` struct of unaligned fields
//! with the [`Record`] as one of them; the receiver casts the received bytes to the struct
//! without copying or allocating, then validates the record where it lies.
//!
//! Run it with `cargo run -p stridemap-core --example embed_in_message`; `cargo test` runs its
//! test.

use stridemap_core::{Builder, DType, Record, ValidDescriptor};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The application's message: 16 bytes of its own, then the descriptor, then a trailer.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WorkRequest {
    request_id: U64,
    kind: U32,
    flags: U32,
    array: Record,
    deadline_ms: U64,
}

/// Receiver side: borrow the message from the buffer in place and validate its descriptor.
/// Nothing is copied and nothing is allocated; the buffer can be at any alignment.
fn receive(datagram: &[u8]) -> Option<(u64, ValidDescriptor)> {
    let msg = WorkRequest::ref_from_bytes(datagram).ok()?;
    let desc = msg.array.validate().ok()?;
    Some((msg.request_id.get(), desc))
}

fn send(request_id: u64) -> Vec<u8> {
    let desc = Builder::new(DType::parse("<f8").expect("typestr"), &[1000, 3])
        .path("/dev/shm/stridemap-demo/points")
        .build()
        .expect("valid descriptor");
    let msg = WorkRequest {
        request_id: U64::new(request_id),
        kind: U32::new(1),
        flags: U32::new(0),
        array: desc.to_record(),
        deadline_ms: U64::new(250),
    };
    msg.as_bytes().to_vec()
}

fn main() {
    let wire = send(42);
    let (id, desc) = receive(&wire).expect("a valid message");
    println!(
        "request {id}: {} array of shape {:?} in {}",
        desc.dtype(),
        desc.shape(),
        desc.path().unwrap_or("<fd>")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_in_place_at_any_alignment() {
        let wire = send(7);
        assert_eq!(wire.len(), 16 + 1024 + 8);
        // Put the datagram at an odd address inside a larger receive buffer.
        let mut rx = vec![0u8; wire.len() + 3];
        rx[3..].copy_from_slice(&wire);
        let msg = WorkRequest::ref_from_bytes(&rx[3..]).unwrap();
        // In place: the record's address is inside the receive buffer.
        let record_addr = &msg.array as *const Record as usize;
        assert_eq!(record_addr, rx.as_ptr() as usize + 3 + 16);
        let (id, desc) = receive(&rx[3..]).unwrap();
        assert_eq!((id, desc.shape()), (7, &[1000, 3][..]));
        assert_eq!(msg.deadline_ms.get(), 250);
    }

    #[test]
    fn a_corrupted_descriptor_is_refused() {
        let mut wire = send(7);
        wire[16 + 200] ^= 1; // a byte inside the record: the CRC catches it
        assert!(receive(&wire).is_none());
    }
}
