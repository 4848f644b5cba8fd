//! A tiny traffic helper for the AF_XDP end-to-end tests, run inside a network
//! namespace with `ip netns exec`:
//!
//! - `tg-netprobe serve TCP_PORT,... UDP_PORT,...`: echo servers on every address
//!   (TCP: every line back, until the client closes; UDP: each datagram back). Prints
//!   `ready` once every socket is bound; runs until killed.
//! - `tg-netprobe tcp ADDR PORT`: connects (2 s timeout), sends a line, expects it
//!   back. Prints `ok` (exit 0) or `fail: reason` (exit 1).
//! - `tg-netprobe udp ADDR PORT`: sends a datagram, expects it back within 2 s.
//! - `tg-netprobe tcpn ADDR PORT N [PAUSE_MS]` / `udpn ...`: the same N times over
//!   one connection (one socket), each echo awaited before the next send (and
//!   PAUSE_MS after it): exactly N packets with payload each way (TCP adds its
//!   handshake, ACKs and teardown).

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
                    while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                        if (&c).write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
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
    tcpn(addr, 1, Duration::ZERO)
}

fn tcpn(addr: SocketAddr, n: u32, pause: Duration) -> Result<(), String> {
    let c = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&c);
    for i in 0..n {
        (&c).write_all(b"tiergate-probe\n")
            .map_err(|e| format!("write {i}: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("read {i}: {e}"))?;
        if line != "tiergate-probe\n" {
            return Err(format!("echo {i} was {line:?}"));
        }
        std::thread::sleep(pause);
    }
    Ok(())
}

fn udp(addr: SocketAddr) -> Result<(), String> {
    udpn(addr, 1, Duration::ZERO)
}

fn udpn(addr: SocketAddr, n: u32, pause: Duration) -> Result<(), String> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    for i in 0..n {
        s.send_to(b"tiergate-probe", addr)
            .map_err(|e| format!("send {i}: {e}"))?;
        let mut buf = [0u8; 64];
        let (len, _) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("recv {i}: {e}"))?;
        if &buf[..len] != b"tiergate-probe" {
            return Err(format!("wrong echo {i}"));
        }
        std::thread::sleep(pause);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let probe = |f: &dyn Fn(SocketAddr) -> Result<(), String>, a: &str, p: &str| {
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
        ["tcp", a, p] => probe(&tcp, a, p),
        ["udp", a, p] => probe(&udp, a, p),
        ["tcpn" | "udpn", a, p, n, rest @ ..] if rest.len() <= 1 => {
            let (Ok(n), Ok(ms)) = (
                n.parse::<u32>(),
                rest.first().map_or(Ok(0), |m| m.parse::<u64>()),
            ) else {
                println!("fail: bad count or pause");
                return ExitCode::from(2);
            };
            let pause = Duration::from_millis(ms);
            if args[0] == "tcpn" {
                probe(&|addr| tcpn(addr, n, pause), a, p)
            } else {
                probe(&|addr| udpn(addr, n, pause), a, p)
            }
        }
        _ => {
            eprintln!(
                "usage: tg-netprobe serve TCP_PORTS UDP_PORTS | tcp|udp ADDR PORT | tcpn|udpn ADDR PORT N [PAUSE_MS]"
            );
            ExitCode::from(2)
        }
    }
}
