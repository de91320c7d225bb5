//! A producer for the attacks: a pool with named segments under the folder given as the only
//! argument. It makes one segment, releases it (the pool keeps it for reuse, unlocked, SPEC.md
//! §7), prints `folder <path>` and waits for a line on stdin, then allocates once more (from
//! the recycled segment) and prints `reused ok` (or the error).

use std::io::{BufRead, Write};

use stridemap_core::Order;
use stridemap_shm::{Pool, PoolConfig, SegmentKind};

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: attack-producer ROOT");
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root)
            .kind(SegmentKind::File)
            .sweep_on_start(false),
    )
    .expect("pool");
    let a = pool.alloc::<u8>(&[1 << 16], Order::C).expect("alloc");
    drop(a.freeze().expect("freeze"));
    // The released segment goes to the free list from the reaper; wait until it is there.
    for _ in 0..200 {
        if pool.stats().free == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let folder = pool.folders()[0].clone();
    println!("folder {}", folder.display());
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    match pool.alloc::<u8>(&[1 << 16], Order::C) {
        Ok(_) => println!("reused ok"),
        Err(e) => println!("error {e}"),
    }
}
