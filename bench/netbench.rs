//! Load generator and servers for `bench/net` (blocking std sockets, one thread each, so
//! the tool itself costs the same on every path it measures).
//!
//!   netbench serve PORT                 TCP request/response (64 bytes each way) and UDP
//!                                       echo on PORT (IPv4); a connection that got a
//!                                       "Q…" request is closed by the server after it
//!                                       answers, others stay open for more
//!   netbench rr HOST PORT SECS THREADS  a new connection per request, closed by the
//!                                       server: prints "CONN_PER_S P50_US P99_US"
//!   netbench udp HOST PORT COUNT        sequential 64-byte round trips: "P50_US P99_US"
//!   netbench hold HOST PORT N SECS      opens N idle connections, prints "open N" and
//!                                       holds them SECS seconds

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const MSG: usize = 64;

fn addr(host: &str, port: &str) -> SocketAddr {
    let host = host.trim_matches(['[', ']']);
    if host.contains(':') {
        format!("[{host}]:{port}").parse().expect("address")
    } else {
        format!("{host}:{port}").parse().expect("address")
    }
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn serve(port: u16) {
    let bind = format!("0.0.0.0:{port}");
    let listener = TcpListener::bind(&bind).expect("bind tcp");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            // Small stacks: thousands of idle connections each hold a thread.
            let _ = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut c = conn;
                    let _ = c.set_nodelay(true);
                    let mut buf = [0u8; MSG];
                    while c.read_exact(&mut buf).is_ok() {
                        if c.write_all(&buf).is_err() || buf[0] == b'Q' {
                            break;
                        }
                    }
                });
        }
    });
    let udp = UdpSocket::bind(&bind).expect("bind udp");
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    println!("ready");
    loop {
        std::thread::park();
    }
}

fn rr(to: SocketAddr, secs: u64, threads: usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut buf = [b'Q'; MSG];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                        continue;
                    };
                    let _ = c.set_nodelay(true);
                    buf[0] = b'Q';
                    if c.write_all(&buf).is_ok() && c.read_exact(&mut buf).is_ok() {
                        lat.push(t.elapsed().as_micros());
                    }
                    // The server closes first (as HTTP/1.0 does), so no client port is
                    // left in TIME_WAIT to slow later connects on any path.
                    let mut rest = [0u8; 1];
                    let _ = c.read(&mut rest);
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<u128> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap_or_default())
        .collect();
    all.sort_unstable();
    println!(
        "{:.0} {} {}",
        all.len() as f64 / secs as f64,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

fn udp(to: SocketAddr, count: usize) {
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).expect("bind");
    s.connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let mut lat = Vec::new();
    let mut buf = [0u8; MSG];
    for i in 0..count {
        let msg = [(i % 251) as u8; MSG];
        let t = Instant::now();
        if s.send(&msg).is_err() {
            continue;
        }
        if let Ok(n) = s.recv(&mut buf) {
            if n == MSG && buf == msg {
                lat.push(t.elapsed().as_micros());
            }
        }
    }
    lat.sort_unstable();
    println!("{} {}", percentile(&lat, 0.5), percentile(&lat, 0.99));
}

fn hold(to: SocketAddr, n: usize, secs: u64) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(c) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
            conns.push(c);
        }
    }
    // One round trip on each: every connection is really open end to end.
    let mut buf = [1u8; MSG];
    conns.retain_mut(|c| c.write_all(&buf).is_ok() && c.read_exact(&mut buf).is_ok());
    println!("open {}", conns.len());
    std::thread::sleep(Duration::from_secs(secs));
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "serve" => serve(arg(2).parse().expect("port")),
        "rr" => rr(
            addr(arg(2), arg(3)),
            arg(4).parse().expect("seconds"),
            arg(5).parse().expect("threads"),
        ),
        "udp" => udp(addr(arg(2), arg(3)), arg(4).parse().expect("count")),
        "hold" => hold(
            addr(arg(2), arg(3)),
            arg(4).parse().expect("count"),
            arg(5).parse().expect("seconds"),
        ),
        _ => {
            eprintln!("usage: netbench serve|rr|udp|hold …");
            std::process::exit(2);
        }
    }
}
