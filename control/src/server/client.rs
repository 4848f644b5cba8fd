//! A blocking client of the control socket (what the CLI verbs use).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::proto::{DEFAULT_SOCKET, ErrorBody, Op, Reply, Request, SOCKET_ENV, VERSION};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon could be reached (or the connection broke).
    Connect(String),
    /// The daemon refused the request.
    Remote(ErrorBody),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(s) => f.write_str(s),
            ClientError::Remote(e) => f.write_str(&e.message),
        }
    }
}

/// The socket path: `--socket`, else `$TIERGATE_SOCKET`, else the default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A connection to a daemon.
#[derive(Debug)]
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    path: PathBuf,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|e| {
            ClientError::Connect(format!(
                "cannot reach tiergate at {}: {e} (is `tiergate run --socket {}` running? set --socket or {SOCKET_ENV})",
                path.display(),
                path.display()
            ))
        })?;
        let w = s
            .try_clone()
            .map_err(|e| ClientError::Connect(format!("{}: {e}", path.display())))?;
        Ok(Client {
            r: BufReader::new(s),
            w,
            path: path.to_path_buf(),
            next_id: 1,
        })
    }

    fn send(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&Request { v: VERSION, id, op })
            .map_err(|e| ClientError::Connect(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        if let Err(e) = self.w.write_all(&line) {
            // The daemon may have refused the connection with a reply and closed it.
            if let Ok(Reply {
                ok: false,
                error: Some(err),
                ..
            }) = self.receive()
            {
                return Err(ClientError::Remote(err));
            }
            return Err(self.broken(e));
        }
        Ok(id)
    }

    fn broken(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Connect(format!(
            "the connection to tiergate at {} broke: {e}",
            self.path.display()
        ))
    }

    fn receive(&mut self) -> Result<Reply, ClientError> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).map_err(|e| self.broken(e))?;
        if n == 0 {
            return Err(self.broken("closed by the daemon"));
        }
        serde_json::from_str(&line).map_err(|e| self.broken(format!("unreadable reply: {e}")))
    }

    /// Sends one request and returns its result.
    pub fn call(&mut self, op: Op) -> Result<Value, ClientError> {
        self.send(op)?;
        let reply = self.receive()?;
        match (reply.ok, reply.result, reply.error) {
            (true, Some(v), _) => Ok(v),
            (true, None, _) => Ok(Value::Null),
            (false, _, Some(e)) => Err(ClientError::Remote(e)),
            (false, _, None) => Err(ClientError::Remote(ErrorBody::new(
                "internal",
                "the daemon refused the request without saying why",
            ))),
        }
    }

    /// Sends one request and hands every result of its stream to `each` until the
    /// stream ends or `each` returns false.
    pub fn stream(
        &mut self,
        op: Op,
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        self.send(op)?;
        loop {
            let reply = self.receive()?;
            if !reply.ok {
                return Err(ClientError::Remote(reply.error.unwrap_or_else(|| {
                    ErrorBody::new("internal", "refused without a reason")
                })));
            }
            let more = reply.more;
            if !each(reply.result.unwrap_or(Value::Null)) || !more {
                return Ok(());
            }
        }
    }
}
