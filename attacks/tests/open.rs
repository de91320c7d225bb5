//! Attacks on opening descriptors in Rust (the `stridemap` crate): mapping reuse, seals,
//! segment headers, roots given through links.

use std::io::Write;
use std::os::fd::OwnedFd;

use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fstat, memfd_create};
use stridemap::{Error, OpenOptions};
use stridemap_attacks::Scratch;
use stridemap_core::{Builder, DType, ValidDescriptor};

/// A sealed memfd holding `bytes`, as a peer passes it.
fn peer_memfd(bytes: &[u8]) -> OwnedFd {
    let fd = memfd_create("peer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    fcntl_add_seals(&f, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    OwnedFd::from(f)
}

fn fd_desc(len: u64, identity: (u64, u64)) -> ValidDescriptor {
    Builder::new(DType::parse("|u1").unwrap(), &[len])
        .buffer(0, len)
        .file_len(len)
        .identity(identity.0, identity.1)
        .fd()
        .build()
        .unwrap()
}

/// Issue 10 item 4: a path descriptor naming a file that does not exist, with the device
/// and inode of a memfd another peer passed earlier (and a wrong length), must not be served
/// that peer's data from the reused mapping.
#[test]
fn mapping_reuse_does_not_cross_peers() {
    let secret = b"the other peer's data".repeat(100);
    let fd = peer_memfd(&secret);
    let st = fstat(&fd).unwrap();
    let key = (st.st_dev, st.st_ino);
    let len = secret.len() as u64;
    let held = OpenOptions::new().open((&fd_desc(len, key), fd)).unwrap();
    assert_eq!(held.copy_array().unwrap().bytes(), &secret[..]);

    let allowed = Scratch::new();
    let forged = Builder::new(DType::parse("|u1").unwrap(), &[16])
        .buffer(0, 16)
        .file_len(len + 4096) // wrong: nothing re-checked it
        .identity(key.0, key.1)
        .path(allowed.join("does-not-exist").to_str().unwrap())
        .build()
        .unwrap();
    let got = OpenOptions::new().allow_root(&allowed.p).open(&forged);
    match got {
        Ok(m) => panic!(
            "served another peer's bytes: {:?}",
            String::from_utf8_lossy(
                &m.copy_array()
                    .map(|a| a.bytes().to_vec())
                    .unwrap_or_default()
            )
        ),
        Err(e) => assert_eq!(e.rule(), Some("O4"), "{e}"),
    }
    // The same file received again (a new fd of it) may reuse the mapping: it was checked.
    drop(held);
}

/// Issue 10 item 8: an fd whose seal query fails with EBADF (an `O_PATH` fd) is O9, as in
/// the Python and C readers, not a plain I/O error.
#[test]
fn an_o_path_fd_is_o9() {
    let dir = Scratch::new();
    let file = dir.join("plain");
    std::fs::write(&file, b"0123456789").unwrap();
    let fd = rustix::fs::open(
        &file,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let st = fstat(&fd).unwrap();
    let e = OpenOptions::new()
        .open((&fd_desc(10, (st.st_dev, st.st_ino)), fd))
        .unwrap_err();
    assert_eq!(e.rule(), Some("O9"), "{e}");
}

/// Issue 10 item 8: the O10 message for a descriptor whose segment id is all zero says the
/// id is wrong, not "generation 1 … made for generation 1".
#[test]
fn the_o10_message_for_an_all_zero_segment_id_names_the_id() {
    let dir = Scratch::new();
    let pool = stridemap_shm::Pool::with_config(
        stridemap_shm::PoolConfig::default()
            .temp_folder(&dir.p)
            .sweep_on_start(false),
    )
    .unwrap();
    let a = pool
        .alloc::<u8>(&[64], stridemap_core::Order::C)
        .unwrap()
        .freeze()
        .unwrap();
    let d = a.descriptor();
    let forged = Builder::new(d.dtype(), d.shape())
        .buffer(d.buffer_offset(), d.buffer_len())
        .file_len(d.file_len())
        .generation(d.generation())
        .segment_id([0; 16])
        .path(d.path().unwrap())
        .build()
        .unwrap();
    let e = OpenOptions::new()
        .allow_root(&dir.p)
        .open(&forged)
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.rule(), Some("O10"), "{msg}");
    assert!(!msg.contains("now holds generation"), "{msg}");
    assert!(msg.contains("segment"), "{msg}");
}

/// Issue 10 item 8: an allowed root given through a symbolic link holds paths spelled
/// through the link and through its target (SPEC.md §6 O2/O3), as in Python and C.
#[test]
fn a_root_given_through_a_symbolic_link() {
    let real = Scratch::new();
    std::fs::write(real.join("x"), b"abc").unwrap();
    let links = Scratch::new();
    let link = links.join("link");
    std::os::unix::fs::symlink(&real.p, &link).unwrap();
    let opts = OpenOptions::new().only_roots([&link]);
    for p in [real.join("x"), link.join("x")] {
        let d = Builder::new(DType::parse("|u1").unwrap(), &[3])
            .buffer(0, 3)
            .file_len(3)
            .path(p.to_str().unwrap())
            .build()
            .unwrap();
        match opts.open(&d) {
            Ok(m) => assert_eq!(m.copy_array().unwrap().bytes(), b"abc"),
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    // Below the link, links still count (O3).
    std::os::unix::fs::symlink(real.join("x"), real.join("y")).unwrap();
    let d = Builder::new(DType::parse("|u1").unwrap(), &[3])
        .buffer(0, 3)
        .file_len(3)
        .path(link.join("y").to_str().unwrap())
        .build()
        .unwrap();
    assert!(matches!(opts.open(&d), Err(Error::Symlink { .. })));
}

/// Issue 10 item 4: a reused mapping must not let a descriptor skip the path walk: a path
/// through a symbolic link, with the identity of a file this process already maps by its real
/// path, is still O3.
#[test]
fn mapping_reuse_does_not_skip_the_symlink_check() {
    use std::os::unix::fs::MetadataExt;
    let root = Scratch::new();
    std::fs::create_dir(root.join("real")).unwrap();
    let file = root.join("real/x");
    std::fs::write(&file, b"mapped by its real path").unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let desc = |p: &std::path::Path| {
        Builder::new(DType::parse("|u1").unwrap(), &[meta.len()])
            .buffer(0, meta.len())
            .file_len(meta.len())
            .identity(meta.dev(), meta.ino())
            .path(p.to_str().unwrap())
            .build()
            .unwrap()
    };
    let opts = OpenOptions::new().allow_root(&root.p);
    let held = opts.open(&desc(&file)).unwrap();
    let e = opts.open(&desc(&root.join("link/x")));
    assert!(
        matches!(e, Err(Error::Symlink { .. })),
        "{:?}",
        e.map(|m| m.descriptor().buffer_len())
    );
    drop(held);
}

/// Issue 19 item 1: a peer's sealed 512 MiB memfd made by `ftruncate` alone, viewed striding
/// 4 KiB through it, made every reader allocate 512 MiB as it read the view. It is refused
/// (O12) by the open itself, before anything is read: this test never reads it (a sparse
/// memfd costs nothing until read), and a dense one of the same shape is taken.
#[test]
fn a_sparse_memfd_is_refused_before_anything_is_read() {
    const LEN: u64 = 512 << 20;
    let striding = |len: u64, (dev, ino): (u64, u64)| {
        Builder::new(DType::parse("|u1").unwrap(), &[len / 4096])
            .strides(&[4096])
            .buffer(0, len)
            .file_len(len)
            .identity(dev, ino)
            .fd()
            .build()
            .unwrap()
    };
    let fd = memfd_create("peer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, LEN).unwrap();
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    let st = fstat(&fd).unwrap();
    assert_eq!(st.st_blocks, 0, "the peer's memfd should have no page yet");
    match OpenOptions::new().open((&striding(LEN, (st.st_dev, st.st_ino)), fd)) {
        // Not read: the view would fault in 131072 pages.
        Ok(_) => panic!("a 512 MiB sparse memfd was mapped: reading its view allocates 512 MiB"),
        Err(e) => {
            println!("refused: {e}");
            assert!(
                matches!(
                    e,
                    Error::Sparse {
                        allocated: 0,
                        buffer_len: LEN
                    }
                ),
                "{e:?}"
            );
            assert_eq!(e.rule(), Some("O12"));
        }
    }
    let dense = peer_memfd(&vec![7u8; 1 << 20]);
    let st = fstat(&dense).unwrap();
    let m = OpenOptions::new()
        .open((&striding(1 << 20, (st.st_dev, st.st_ino)), dense))
        .expect("a written memfd is taken");
    assert!(m.copy_array().unwrap().bytes().iter().all(|&b| b == 7));
}
