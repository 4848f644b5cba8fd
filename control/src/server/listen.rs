//! The control socket: a Unix stream socket (mode 0600 by default, peer uid checked:
//! the daemon's own uid or root), many concurrent clients, each sending request lines
//! (see [`super::proto`]) and reading reply lines.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::timeout;

use super::daemon::{Answer, Daemon, Engine};
use super::proto::{
    ErrorBody, IDLE_TIMEOUT, MAX_REQUEST_BYTES, Op, READ_TIMEOUT, Reply, parse_request,
};

/// How long a reply may take to be taken by a client that does not read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A bound control socket; the socket file is removed when it is dropped.
#[derive(Debug)]
pub struct Bound {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket at `path` with permission bits `mode`: creates the parent
/// directory (mode 0700) if missing, refuses a path where another daemon answers,
/// replaces a stale socket file, refuses any other existing file. Must run inside the
/// control runtime (see [`super::ControlThread::bind`]).
pub fn bind(path: &Path, mode: u32) -> Result<Bound, String> {
    let shown = path.display();
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("--socket {shown}: cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(format!(
                    "--socket {shown}: exists and is not a socket (remove it or choose another path)"
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "--socket {shown}: another daemon is listening there"
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("--socket {shown}: cannot remove the stale socket: {e}"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("--socket {shown}: {e}")),
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("--socket {shown}: {e}"))?;
    let bound = Bound {
        listener: Some(listener),
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("--socket {shown}: cannot set its mode: {e}"))?;
    Ok(bound)
}

/// Accepts clients until the runtime shuts down.
pub async fn serve<E: Engine>(mut bound: Bound, daemon: Arc<Daemon<E>>) {
    let Some(listener) = bound.listener.take() else {
        return;
    };
    let own_uid = crate::sys::euid();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let d = Arc::clone(&daemon);
                tokio::spawn(async move {
                    let _ = client(stream, d, own_uid).await;
                });
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

enum LineError {
    Eof,
    TooLarge,
    Io,
}

/// Reads one line (without its newline) of at most [`MAX_REQUEST_BYTES`].
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(), LineError> {
    loop {
        let avail = r.fill_buf().await.map_err(|_| LineError::Io)?;
        if avail.is_empty() {
            return Err(LineError::Eof);
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            if buf.len() + i > MAX_REQUEST_BYTES {
                return Err(LineError::TooLarge);
            }
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            return Ok(());
        }
        let n = avail.len();
        if buf.len() + n > MAX_REQUEST_BYTES {
            return Err(LineError::TooLarge);
        }
        buf.extend_from_slice(avail);
        r.consume(n);
    }
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, line: &str) -> io::Result<()> {
    match timeout(WRITE_TIMEOUT, w.write_all(line.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client not reading",
        )),
    }
}

async fn client<E: Engine>(
    stream: UnixStream,
    daemon: Arc<Daemon<E>>,
    own_uid: u32,
) -> io::Result<()> {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (r, mut w) = stream.into_split();
    if !uid.is_some_and(|u| u == own_uid || u == 0) {
        let who = uid.map_or("unknown".to_string(), |u| u.to_string());
        let reply = Reply::err(
            None,
            ErrorBody::new(
                "unauthorized",
                format!("uid {who} may not use this socket (only uid {own_uid} and root)"),
            ),
        );
        let _ = write(&mut w, &reply.line()).await;
        return Ok(());
    }
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Idle between requests: wait for the first byte of the next one.
        match timeout(IDLE_TIMEOUT, r.fill_buf()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok([])) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        match timeout(READ_TIMEOUT, read_line(&mut r, &mut buf)).await {
            Err(_) => {
                let reply = Reply::err(
                    None,
                    ErrorBody::new(
                        "timeout",
                        format!(
                            "the request line did not arrive within {} s; closing",
                            READ_TIMEOUT.as_secs()
                        ),
                    ),
                );
                let _ = write(&mut w, &reply.line()).await;
                return Ok(());
            }
            Ok(Err(LineError::TooLarge)) => {
                let reply = Reply::err(
                    None,
                    ErrorBody::new(
                        "too_large",
                        format!("the request is longer than {MAX_REQUEST_BYTES} bytes; closing"),
                    ),
                );
                let _ = write(&mut w, &reply.line()).await;
                return Ok(());
            }
            Ok(Err(LineError::Eof | LineError::Io)) => return Ok(()),
            Ok(Ok(())) => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let req = match parse_request(&buf) {
            Ok(req) => req,
            Err(reply) => {
                write(&mut w, &reply.line()).await?;
                continue;
            }
        };
        // Changes and reports that walk every flow run off the runtime's threads.
        let slow = matches!(
            req.op,
            Op::Apply { .. } | Op::Delete { .. } | Op::Impact { .. } | Op::Stats
        );
        let answer = if slow {
            let d = Arc::clone(&daemon);
            match tokio::task::spawn_blocking(move || d.handle(req)).await {
                Ok(a) => a,
                Err(e) => Answer::Line(
                    Reply::err(
                        None,
                        ErrorBody::new("internal", format!("request failed: {e}")),
                    )
                    .line(),
                ),
            }
        } else {
            daemon.handle(req)
        };
        match answer {
            Answer::Line(l) => write(&mut w, &l).await?,
            Answer::Follow {
                backlog,
                filter,
                mut rx,
            } => {
                write(&mut w, &backlog).await?;
                let id = serde_json::from_str::<Reply>(&backlog)
                    .ok()
                    .and_then(|r| r.id)
                    .unwrap_or(0);
                loop {
                    tokio::select! {
                        got = rx.recv() => {
                            let mut reply = match got {
                                Ok(e) if filter.matches(&e) => Reply::ok(id, serde_json::json!({ "flows": [&*e] })),
                                Ok(_) => continue,
                                Err(RecvError::Lagged(n)) => Reply::ok(id, serde_json::json!({ "flows": [], "lost": n })),
                                Err(RecvError::Closed) => return Ok(()),
                            };
                            reply.more = true;
                            write(&mut w, &reply.line()).await?;
                        }
                        // A following client ends the stream by closing.
                        got = r.fill_buf() => {
                            match got {
                                Ok([]) | Err(_) => return Ok(()),
                                Ok(b) => { let n = b.len(); r.consume(n); }
                            }
                        }
                    }
                }
            }
        }
    }
}
