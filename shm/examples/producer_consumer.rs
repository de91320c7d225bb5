use std::os::unix::net::UnixStream;
use std::process::Command;

use stridemap::{OpenOptions, socket};
use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind, Slice};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Consumer: any process that receives a descriptor (here, this program run again).
    if let Some(path) = std::env::args().nth(1) {
        let stream = UnixStream::connect(path)?;
        let m = OpenOptions::new().open(socket::recv(&stream)?)?; // checked, mapped
        // A frozen memfd (sealed by the kernel, checked on our fd): views lend &f64s.
        let col = m
            .view::<f64>()?
            .index_axis(1, 1)?
            .slice_axis(0, Slice::REVERSED)?;
        println!(
            "consumer: column 1 reversed starts {:?}",
            &col.to_vec()[..3]
        );
        return Ok(());
    }
    // Producer: a 1000x3 array in a sealed memfd, filled in place, frozen, handed over.
    let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    let mut a = pool.alloc::<f64>(&[1000, 3], Order::C)?;
    for (i, x) in a.as_mut_slice()?.iter_mut().enumerate() {
        *x = i as f64;
    }
    let a = a.freeze()?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    let mut child = Command::new(std::env::current_exe()?).arg(&sock).spawn()?;
    a.send(&listener.accept()?.0)?; // 1 KiB descriptor + fd, whatever the array's size
    child.wait()?;
    Ok(())
}
