//! A tiny traffic helper for the AF_XDP end-to-end tests, run inside a network
//! namespace with `ip netns exec`:
//!
//! - `tg-netprobe serve TCP_PORT,... UDP_PORT,...`: echo servers on every address
//!   (TCP: one line back per connection; UDP: each datagram back). Prints `ready` once
//!   every socket is bound; runs until killed.
//! - `tg-netprobe tcp ADDR PORT`: connects (2 s timeout), sends a line, expects it
//!   back. Prints `ok` (exit 0) or `fail: reason` (exit 1).
//! - `tg-netprobe udp ADDR PORT`: sends a datagram, expects it back within 2 s.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn ports(s: &str) -> Vec<u16> {
    s.split(',').filter_map(|p| p.parse().ok()).collect()
}

fn serve(tcp: &[u16], udp: &[u16]) -> ExitCode {
    let mut threads = Vec::new();
    for &p in tcp {
        let l = match TcpListener::bind(("0.0.0.0", p)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind tcp {p}: {e}");
                return ExitCode::FAILURE;
            }
        };
        threads.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(TIMEOUT));
                    let mut line = String::new();
                    let mut r = BufReader::new(&c);
                    if r.read_line(&mut line).is_ok() {
                        let _ = (&c).write_all(line.as_bytes());
                    }
                });
            }
        }));
    }
    for &p in udp {
        let s = match UdpSocket::bind(("0.0.0.0", p)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bind udp {p}: {e}");
                return ExitCode::FAILURE;
            }
        };
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn tcp(addr: SocketAddr) -> Result<(), String> {
    let c = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    (&c).write_all(b"tiergate-probe\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(&c)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line == "tiergate-probe\n" {
        Ok(())
    } else {
        Err(format!("echo was {line:?}"))
    }
}

fn udp(addr: SocketAddr) -> Result<(), String> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.send_to(b"tiergate-probe", addr)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let (n, _) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
    if &buf[..n] == b"tiergate-probe" {
        Ok(())
    } else {
        Err("wrong echo".into())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let probe = |f: fn(SocketAddr) -> Result<(), String>, a: &str, p: &str| {
        let addr: SocketAddr = match format!("{a}:{p}").parse() {
            Ok(x) => x,
            Err(e) => {
                println!("fail: bad address: {e}");
                return ExitCode::from(2);
            }
        };
        match f(addr) {
            Ok(()) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("fail: {e}");
                ExitCode::FAILURE
            }
        }
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", t, u] => serve(&ports(t), &ports(u)),
        ["tcp", a, p] => probe(tcp, a, p),
        ["udp", a, p] => probe(udp, a, p),
        _ => {
            eprintln!(
                "usage: tg-netprobe serve TCP_PORTS UDP_PORTS | tcp ADDR PORT | udp ADDR PORT"
            );
            ExitCode::from(2)
        }
    }
}
