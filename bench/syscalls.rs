//! The seccomp benchmark's workload, run inside a sandbox with and without its filter:
//! syscall-bound loops and one loopback TCP stream. Static (no libc in a busybox root).
//! Prints `NAME VALUE` lines: ns per call, and MB/s for the stream.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let getppid = per_call(1_000_000, || {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    });
    let path = c"/bin";
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let stat = per_call(100_000, || {
        // SAFETY: a NUL-terminated path and a buffer the size of struct stat.
        unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) };
    });
    // One stream over the sandbox's own loopback: 1 GiB in 128 KiB writes, as iperf3 does.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 128 << 10];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let chunk = vec![7u8; 128 << 10];
    let t = Instant::now();
    let mut out = TcpStream::connect(addr).expect("connect");
    for _ in 0..(1 << 13) {
        out.write_all(&chunk).expect("write");
    }
    drop(out);
    let total = reader.join().expect("reader");
    let mbps = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!("getppid_ns {getppid:.1}\nstat_ns {stat:.1}\nstream_mbps {mbps:.0}");
}
