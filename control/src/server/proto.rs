//! The control socket's wire protocol: newline-delimited JSON, one request per line,
//! one or more replies per request (a `flows --follow` stream sends many).
//!
//! A request is a versioned envelope `{"v":1,"id":N,"op":"...", ...op fields}`; every
//! reply carries the request's `id` (when it could be read), `ok`, and either
//! `result` or `error`. A reply with `"more":true` is followed by further replies to
//! the same request (streams). A request line longer than [`MAX_REQUEST_BYTES`] is
//! refused and the connection closed; so is a connection that takes longer than
//! [`READ_TIMEOUT`] to send a whole line once it started one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest request line (bytes, newline excluded).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Longest a client may take to send one request line once its first byte arrived.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may stay idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default socket path of `tiergate run` and of the client verbs.
pub const DEFAULT_SOCKET: &str = "/run/tiergate/tiergate.sock";
/// Environment variable naming the socket for the client verbs.
pub const SOCKET_ENV: &str = "TIERGATE_SOCKET";

/// A request envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version ([`VERSION`]).
    pub v: u32,
    /// Request id, echoed in every reply.
    pub id: u64,
    /// The operation and its fields.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Apply resources (one, a List, or a multi-document YAML/JSON text): all or
    /// nothing.
    Apply {
        /// The resources.
        #[serde(default)]
        text: Option<String>,
        /// Name of `text`'s source in error messages (a file name, `<stdin>`).
        #[serde(default)]
        source: Option<String>,
        /// More sources, applied with `text` as one change.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<SourceText>,
    },
    /// Delete resources: the keys given, and the keys of the resources in `text`.
    Delete {
        /// Keys to delete.
        #[serde(default)]
        keys: Vec<KeyRef>,
        /// Resources whose keys to delete (what `delete -f FILE` sends).
        #[serde(default)]
        text: Option<String>,
        /// Name of `text`'s source in error messages.
        #[serde(default)]
        source: Option<String>,
        /// More sources whose resources' keys to delete.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<SourceText>,
    },
    /// Resources of one kind (or one resource).
    Get {
        /// Kind (`networkpolicy`, `gnp`, `tier`, ...).
        kind: String,
        /// One name.
        #[serde(default)]
        name: Option<String>,
        /// Namespace of namespaced kinds; `None` = every namespace.
        #[serde(default)]
        namespace: Option<String>,
    },
    /// Live flow records, newest last.
    Flows {
        /// Which records.
        #[serde(default)]
        filter: FlowFilter,
        /// Most records returned (the newest); default 1000.
        #[serde(default)]
        limit: Option<usize>,
        /// Keep the request open and stream new records as they arrive.
        #[serde(default)]
        follow: bool,
    },
    /// The staged-policy impact report over the live flows.
    Impact {
        /// Length of the peer and port lists.
        #[serde(default)]
        top: Option<usize>,
    },
    /// The data plane's live counters.
    Stats,
    /// Liveness: policy generation, workers and the generation each runs.
    Health,
    /// Build and protocol version.
    Version,
}

/// One source of resources in a request (a file the client read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceText {
    /// Its name in error messages.
    pub source: String,
    /// Its text.
    pub text: String,
    /// A stream of JSON values (a `*.json` file) rather than YAML.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
}

/// A resource key in a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// Kind (as [`Op::Get`] accepts it).
    pub kind: String,
    /// Namespace (namespaced kinds; default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// Which flow records `flows` returns. Every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Enforced action (`allow`/`deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Pending action (`allow`/`deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_action: Option<String>,
    /// A policy named in the enforced or pending trace: a substring of a hit string
    /// (`default|wire/server-ingress|allow|0`) or the policy's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Namespace of either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Address of either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Port of either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version.
    pub v: u32,
    /// The request's id (`None` when the request could not be read far enough).
    pub id: Option<u64>,
    /// Whether the request succeeded.
    pub ok: bool,
    /// More replies to this request follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// The result (`ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong (not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `bad_request`, `invalid`, `not_found`, `too_large`, `timeout`, `unavailable`,
    /// `persist` or `internal`.
    pub code: String,
    /// One line for humans.
    pub message: String,
    /// Every problem of an invalid input, one `FILE:DOC: FIELD: REASON` line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl ErrorBody {
    /// An error with no problem list.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: u64, result: Value) -> Self {
        Reply {
            v: VERSION,
            id: Some(id),
            ok: true,
            more: false,
            result: Some(result),
            error: None,
        }
    }

    /// A failed reply.
    pub fn err(id: Option<u64>, error: ErrorBody) -> Self {
        Reply {
            v: VERSION,
            id,
            ok: false,
            more: false,
            result: None,
            error: Some(error),
        }
    }

    /// The reply as one line (newline included).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"v":{VERSION},"id":null,"ok":false,"error":{{"code":"internal","message":"cannot serialize the reply: {e}"}}}}"#
            )
        });
        s.push('\n');
        s
    }
}

/// Reads a request line: the envelope, or the error reply to send (with the id when
/// the line had one).
pub fn parse_request(line: &[u8]) -> Result<Request, Box<Reply>> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        Box::new(Reply::err(
            None,
            ErrorBody::new(
                "bad_request",
                format!("the request is not one JSON object on one line: {e}"),
            ),
        ))
    })?;
    let id = value.get("id").and_then(Value::as_u64);
    let Some(obj) = value.as_object() else {
        return Err(Box::new(Reply::err(
            id,
            ErrorBody::new("bad_request", "the request must be a JSON object"),
        )));
    };
    match obj.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(Box::new(Reply::err(
                id,
                ErrorBody::new(
                    "bad_request",
                    format!("protocol version {v} is not supported (this daemon speaks {VERSION})"),
                ),
            )));
        }
        None => {
            return Err(Box::new(Reply::err(
                id,
                ErrorBody::new(
                    "bad_request",
                    format!("the request has no \"v\" (protocol version, {VERSION})"),
                ),
            )));
        }
    }
    if id.is_none() {
        return Err(Box::new(Reply::err(
            None,
            ErrorBody::new(
                "bad_request",
                "the request has no \"id\" (a non-negative integer)",
            ),
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        Box::new(Reply::err(
            id,
            ErrorBody::new(
                "bad_request",
                format!("bad request: {e} (ops: apply, delete, get, flows, impact, stats, health, version)"),
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_name_the_problem() {
        let r = Request {
            v: 1,
            id: 7,
            op: Op::Get {
                kind: "gnp".into(),
                name: None,
                namespace: None,
            },
        };
        let line = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_request(&line).unwrap(), r);
        let e = parse_request(br#"{"v":2,"id":3,"op":"stats"}"#).unwrap_err();
        assert_eq!(e.id, Some(3));
        assert!(e.error.unwrap().message.contains("version 2"));
        let e = parse_request(br#"{"v":1,"id":4,"op":"frobnicate"}"#).unwrap_err();
        assert_eq!(e.id, Some(4));
        assert!(e.error.unwrap().message.contains("frobnicate"));
        let e = parse_request(b"not json").unwrap_err();
        assert_eq!(e.id, None);
        let e = parse_request(br#"{"v":1,"op":"stats"}"#).unwrap_err();
        assert!(e.error.unwrap().message.contains("\"id\""));
        assert_eq!(
            parse_request(br#"{"v":1,"id":9,"op":"stats"}"#).unwrap().op,
            Op::Stats
        );
    }
}
