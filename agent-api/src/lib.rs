//! The nsx-agent local API as types, shared by the agent (which answers)
//! and nsxcli and `nsx-agent ctl` (which ask): newline-delimited JSON on a
//! unix socket, one request line, one reply line. `agent/API.md` is the
//! contract in prose; a test holds it to these types.
//!
//! * [`Request`]: the commands, tagged by `cmd`, with their arguments;
//!   [`parse_request`] checks a request line strictly (unknown commands
//!   and arguments refused, every bad argument named).
//! * [`reply`]: one serde type per reply. Every reply object also carries
//!   `api_version` ([`encode_reply`], [`Reply`]); a failure is
//!   `{"api_version": 1, "error": "..."}` ([`encode_error`]).
//!
//! On the wire, object keys are sorted (the replies go through
//! `serde_json::Value`, as they always have), so the bytes stay the same
//! whichever order a type declares its fields in. Replies are only ever
//! extended: clients ignore fields they do not know.

#![forbid(unsafe_code)]

pub mod hex;
pub mod reply;
pub mod request;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use reply::*;
pub use request::{
    COMMANDS, CapturePoint, Frame, Request, RequestError, SwitchRef, TraceFrom, parse_request,
    parse_virtual_server,
};

/// The API version this crate describes. A request with a newer one is
/// refused; replies carry it.
pub const API_VERSION: u32 = 1;

/// A reply as read by a client: `api_version` beside the command's own
/// fields (`T`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T> {
    pub api_version: u32,
    #[serde(flatten)]
    pub body: T,
}

/// An error reply's one field (besides `api_version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// A request line as a client sends it: `api_version`, `cmd` and the
/// command's arguments, without the newline.
#[must_use]
pub fn encode_request(req: &Request) -> String {
    let mut v = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("api_version".into(), Value::from(API_VERSION));
    }
    v.to_string()
}

/// A reply line (without the newline): `body`'s fields and `api_version`,
/// keys sorted.
#[must_use]
pub fn encode_reply<T: Serialize>(body: &T) -> String {
    match serde_json::to_value(body) {
        Ok(Value::Object(mut m)) => {
            m.insert("api_version".into(), Value::from(API_VERSION));
            Value::Object(m).to_string()
        }
        Ok(_) => encode_error("internal error: a reply that is not an object"),
        Err(e) => encode_error(&format!("internal error: {e}")),
    }
}

/// An error reply line (without the newline).
#[must_use]
pub fn encode_error(msg: &str) -> String {
    encode_reply(&ErrorReply { error: msg.into() })
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The agent answered with `{"error": ...}`.
    #[error("{0}")]
    Api(String),
    /// Not a reply of the expected shape.
    #[error("{0}")]
    Malformed(String),
}

/// Checks one reply line: a JSON object, and not `{"error": ...}`.
/// Returns the object as is (for clients that print it).
pub fn reply_value(line: &str) -> Result<Value, ReplyError> {
    if line.trim().is_empty() {
        return Err(ReplyError::Malformed(
            "the connection closed without a reply".into(),
        ));
    }
    let v: Value =
        serde_json::from_str(line.trim_end()).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if !v.is_object() {
        return Err(ReplyError::Malformed("not a JSON object".into()));
    }
    if let Some(e) = v.get("error") {
        return Err(ReplyError::Api(
            e.as_str().map_or_else(|| e.to_string(), str::to_string),
        ));
    }
    Ok(v)
}

/// A reply object (from [`reply_value`]) as the command's type `T`.
pub fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, ReplyError> {
    T::deserialize(v).map_err(|e| ReplyError::Malformed(e.to_string()))
}
