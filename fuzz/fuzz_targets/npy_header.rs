//! The `.npy` header parser on arbitrary bytes: it must never panic, read past its input or
//! accept more than numpy's header cap; whatever it accepts, reading it through `Header::read`
//! agrees, and a header written for the same dtype and shape parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stridemap::ByteView;
use stridemap::npy::{Header, MAX_HEADER_LEN, write};
use stridemap_core::{Layout, Order};

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    let read = Header::read(&mut &data[..]);
    match (&parsed, &read) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("parse and read disagree: {parsed:?} vs {read:?}"),
    }
    let Ok(h) = parsed else { return };
    assert!(h.data_offset as usize <= 12 + MAX_HEADER_LEN);
    assert!(h.data_offset as usize <= data.len());
    // Write an array of that dtype and shape (when small) and parse it back.
    let Ok(layout) = Layout::contiguous(h.dtype.itemsize(), &h.shape, Order::C) else {
        return;
    };
    if layout.nbytes() > 1 << 16 {
        return;
    }
    let bytes = vec![0u8; layout.nbytes() as usize];
    let view = ByteView::new(&bytes, layout, h.dtype).unwrap();
    let mut out = Vec::new();
    write(&view, &mut out).unwrap();
    let back = Header::parse(&out).unwrap();
    assert_eq!(
        (back.dtype, &back.shape, back.fortran_order),
        (h.dtype, &h.shape, false)
    );
    assert_eq!(out.len() as u64, back.data_offset + layout.nbytes());
    assert_eq!(back.data_offset % 64, 0);
});
