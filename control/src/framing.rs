//! Length-delimited framing of control messages, as a pure codec over byte
//! buffers (no sockets): each frame is a 4-byte big-endian payload length
//! followed by that many bytes of JSON (one [`crate::proto`] message).
//!
//! [`encode`] turns a message into one frame. A [`Decoder`] is fed whatever
//! bytes the transport delivered ([`Decoder::push`]) and hands out complete
//! messages ([`Decoder::next`]). The payload length is checked against the
//! limit as soon as the 4-byte prefix is in, before any of the payload is
//! buffered, so a peer cannot make us hold more than one maximal frame.
//!
//! Every error is a protocol violation after which the shell closes the
//! connection (logging the error). The decoder is then *poisoned*: every
//! later [`Decoder::next`] repeats the error, so a shell that keeps reading
//! cannot accidentally resynchronise on attacker-chosen bytes.

use std::marker::PhantomData;

use serde::Deserialize;

use crate::proto::{MAX_FRAME, Message};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or an encoded message) exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The payload is not JSON (or not a JSON object).
    #[error("frame is not valid JSON: {0}")]
    BadJson(String),
    /// A JSON object without a string `"type"` field.
    #[error("message has no \"type\" field")]
    MissingType,
    /// A `"type"` this side does not know (or one of the other direction).
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known type whose fields do not match the schema.
    #[error("invalid {ty} message: {detail}")]
    InvalidMessage { ty: String, detail: String },
    /// Serialisation failed (should not happen for our types).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `msg` as one frame (length prefix + JSON).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    encode_with_max(msg, MAX_FRAME)
}

/// [`encode`] with an explicit payload limit.
pub fn encode_with_max<M: Message>(msg: &M, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut out, msg).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    out[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decodes a single JSON payload (no length prefix) into a message,
/// classifying failures.
pub fn decode_payload<M: Message>(payload: &[u8]) -> Result<M, FrameError> {
    match serde_json::from_slice::<M>(payload) {
        Ok(m) => Ok(m),
        Err(e) => Err(classify::<M>(payload, e)),
    }
}

/// Only the tag, to explain why a full parse failed.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    ty: Option<serde_json::Value>,
}

fn classify<M: Message>(payload: &[u8], err: serde_json::Error) -> FrameError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => FrameError::BadJson(err.to_string()),
        Category::Data => match serde_json::from_slice::<Peek>(payload) {
            // Valid JSON but not an object (`[1]`, `3`, `"x"`).
            Err(_) => FrameError::BadJson(err.to_string()),
            Ok(Peek { ty: None }) => FrameError::MissingType,
            Ok(Peek {
                ty: Some(serde_json::Value::String(t)),
            }) => {
                if M::TYPES.contains(&t.as_str()) {
                    FrameError::InvalidMessage {
                        ty: t,
                        detail: err.to_string(),
                    }
                } else {
                    FrameError::UnknownType(truncate(&t, 64))
                }
            }
            Ok(Peek { ty: Some(_) }) => FrameError::MissingType,
        },
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

/// Incremental frame decoder: push bytes in, pull messages out.
///
/// Typical use: after each read, `push` the bytes, then call `next` until it
/// returns `Ok(None)`; on `Err`, close the connection with that reason.
#[derive(Debug)]
pub struct Decoder<M> {
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    start: usize,
    max: usize,
    failed: Option<FrameError>,
    _msg: PhantomData<fn() -> M>,
}

impl<M: Message> Default for Decoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Message> Decoder<M> {
    /// A decoder with the protocol's [`MAX_FRAME`] limit.
    pub fn new() -> Self {
        Self::with_max(MAX_FRAME)
    }

    /// A decoder with an explicit payload limit.
    pub fn with_max(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max,
            failed: None,
            _msg: PhantomData,
        }
    }

    /// Appends received bytes. Ignored once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact before growing so the buffer stays near one frame.
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start == self.buf.len()) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed by a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    #[allow(clippy::should_implement_trait)] // fallible, not an Iterator
    pub fn next(&mut self) -> Result<Option<M>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        // A prefix beyond usize (16-bit targets only) is over any limit too.
        let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(self.fail(FrameError::TooLarge { len, max: self.max }));
        }
        let Some(payload) = avail.get(HEADER_LEN..HEADER_LEN + len) else {
            // Reserve once for the whole frame (bounded by `max`).
            let missing = HEADER_LEN + len - avail.len();
            self.buf.reserve(missing);
            return Ok(None);
        };
        let res = decode_payload::<M>(payload);
        self.start += HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        match res {
            Ok(m) => Ok(Some(m)),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e.clone());
        self.buf = Vec::new();
        self.start = 0;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AgentMsg, GatewayMsg};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let msgs = [
            GatewayMsg::Heartbeat { seq: 1 },
            GatewayMsg::Reject {
                reason: "bye".into(),
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(encode(m).unwrap());
        }
        let mut d = Decoder::<GatewayMsg>::new();
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_prefix_rejected_before_buffering() {
        let mut d = Decoder::<AgentMsg>::new();
        d.push(&(u32::try_from(MAX_FRAME).unwrap() + 1).to_be_bytes());
        assert_eq!(
            d.next(),
            Err(FrameError::TooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        // Poisoned: the error repeats, further bytes are dropped.
        d.push(&[0; 100]);
        assert_eq!(d.buffered(), 0);
        assert!(matches!(d.next(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn max_sized_frame_accepted() {
        let mut d = Decoder::<AgentMsg>::with_max(30);
        let ok = encode_with_max(&AgentMsg::Ack { version: 1 }, 30).unwrap();
        assert!(ok.len() - HEADER_LEN <= 30);
        d.push(&ok);
        assert_eq!(d.next(), Ok(Some(AgentMsg::Ack { version: 1 })));
    }

    #[test]
    fn encode_refuses_oversized() {
        let m = AgentMsg::Nack {
            version: 1,
            reason: "x".repeat(100),
            resync: false,
        };
        assert!(matches!(
            encode_with_max(&m, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
    }

    fn decode_one(payload: &[u8]) -> Result<Option<AgentMsg>, FrameError> {
        let mut d = Decoder::<AgentMsg>::new();
        d.push(&frame(payload));
        d.next()
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            decode_one(b"{not json"),
            Err(FrameError::BadJson(_))
        ));
        assert!(matches!(decode_one(b""), Err(FrameError::BadJson(_))));
        assert!(matches!(decode_one(b"[1,2]"), Err(FrameError::BadJson(_))));
        assert!(matches!(
            decode_one(b"\xff\xfe"),
            Err(FrameError::BadJson(_))
        ));
        assert_eq!(decode_one(br#"{"seq":1}"#), Err(FrameError::MissingType));
        assert_eq!(
            decode_one(br#"{"type":5,"seq":1}"#),
            Err(FrameError::MissingType)
        );
        assert_eq!(
            decode_one(br#"{"type":"Bogus"}"#),
            Err(FrameError::UnknownType("Bogus".into()))
        );
        // A gateway->agent type arriving at the gateway is unknown there.
        assert_eq!(
            decode_one(br#"{"type":"Welcome","version":1}"#),
            Err(FrameError::UnknownType("Welcome".into()))
        );
        assert!(matches!(
            decode_one(br#"{"type":"Ack","version":"one"}"#),
            Err(FrameError::InvalidMessage { ref ty, .. }) if ty == "Ack"
        ));
        assert!(matches!(
            decode_one(br#"{"type":"Ack","version":1,"extra":true}"#),
            Err(FrameError::InvalidMessage { .. })
        ));
    }

    #[test]
    fn partial_header_and_payload_wait_for_more() {
        let bytes = encode(&AgentMsg::Heartbeat { seq: 9 }).unwrap();
        let mut d = Decoder::<AgentMsg>::new();
        d.push(&bytes[..2]);
        assert_eq!(d.next(), Ok(None));
        d.push(&bytes[2..6]);
        assert_eq!(d.next(), Ok(None));
        d.push(&bytes[6..]);
        assert_eq!(d.next(), Ok(Some(AgentMsg::Heartbeat { seq: 9 })));
        assert_eq!(d.next(), Ok(None));
    }
}

#[cfg(test)]
pub(crate) mod prop {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{InstanceConfig, LocalPort, MacAddr};
    use crate::proto::{AgentMsg, GatewayMsg, InstanceMeta, StatusReport};

    fn config() -> impl Strategy<Value = Option<InstanceConfig>> {
        proptest::option::of(
            (
                any::<u64>(),
                any::<u32>(),
                proptest::option::of(any::<[u8; 4]>()),
            )
                .prop_map(|(version, tep_id, port)| InstanceConfig {
                    version,
                    tep_id,
                    port: port.map(|ip| LocalPort {
                        switch: "web".into(),
                        ip: Ipv4Addr::from(ip),
                        mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                    }),
                    ..InstanceConfig::default()
                }),
        )
    }

    pub(crate) fn agent_msg() -> impl Strategy<Value = AgentMsg> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u32>(), 0..4),
                ".{0,12}",
                ".{0,12}",
                proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..3),
                proptest::option::of(any::<u64>()),
                any::<[u8; 6]>(),
            )
                .prop_map(|(versions, agent_version, id, tags, applied, mac)| {
                    AgentMsg::Hello {
                        versions,
                        agent_version,
                        instance: InstanceMeta {
                            instance_id: id,
                            hostname: "h".into(),
                            os: "linux".into(),
                            image_id: "ami-1".into(),
                            tags,
                            underlay_ip: Ipv4Addr::new(10, 0, 0, 1),
                            nic_mac: MacAddr(mac),
                        },
                        applied_version: applied,
                    }
                }),
            any::<u64>().prop_map(|version| AgentMsg::Ack { version }),
            (any::<u64>(), ".{0,20}", any::<bool>()).prop_map(|(version, reason, resync)| {
                AgentMsg::Nack {
                    version,
                    reason,
                    resync,
                }
            }),
            any::<u64>().prop_map(|seq| AgentMsg::Heartbeat { seq }),
            (
                proptest::option::of(any::<u64>()),
                proptest::collection::btree_map(".{0,8}", any::<u64>(), 0..4)
            )
                .prop_map(|(applied_version, counters)| AgentMsg::Status(
                    StatusReport {
                        applied_version,
                        counters: counters.into_iter().collect::<BTreeMap<_, _>>(),
                        last_error: None,
                    }
                )),
        ]
    }

    pub(crate) fn gateway_msg() -> impl Strategy<Value = GatewayMsg> {
        prop_oneof![
            (any::<u32>(), ".{0,12}", any::<u32>(), any::<u64>()).prop_map(
                |(version, instance_id, tep_id, heartbeat_ms)| GatewayMsg::Welcome {
                    version,
                    instance_id,
                    tep_id,
                    heartbeat_ms
                }
            ),
            (any::<u64>(), config())
                .prop_map(|(version, config)| GatewayMsg::Snapshot { version, config }),
            (any::<u64>(), any::<u64>(), config()).prop_map(|(from_version, version, config)| {
                GatewayMsg::Update {
                    from_version,
                    version,
                    config,
                }
            }),
            any::<u64>().prop_map(|seq| GatewayMsg::Heartbeat { seq }),
            ".{0,20}".prop_map(|reason| GatewayMsg::Reject { reason }),
        ]
    }

    /// Feeds `bytes` to `d` in chunks cut at `cuts`, collecting messages.
    fn feed<M: Message>(d: &mut Decoder<M>, bytes: &[u8], cuts: &[usize]) -> Vec<M> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            d.push(&bytes[at..c]);
            at = c;
            while let Some(m) = d.next().expect("valid stream") {
                out.push(m);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)
        ) {
            let mut a = Decoder::<AgentMsg>::with_max(1024);
            let mut g = Decoder::<GatewayMsg>::with_max(1024);
            for c in &chunks {
                a.push(c);
                g.push(c);
                for _ in 0..4 {
                    let _ = a.next();
                    let _ = g.next();
                }
            }
        }

        #[test]
        fn framed_garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
            bytes.extend(&payload);
            let mut a = Decoder::<AgentMsg>::new();
            a.push(&bytes);
            let _ = a.next();
            let mut g = Decoder::<GatewayMsg>::new();
            g.push(&bytes);
            let _ = g.next();
        }

        #[test]
        fn agent_msgs_round_trip_split_anywhere(
            msgs in proptest::collection::vec(agent_msg(), 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                bytes.extend(encode(m).unwrap());
            }
            let mut d = Decoder::<AgentMsg>::new();
            prop_assert_eq!(feed(&mut d, &bytes, &cuts), msgs);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn gateway_msgs_round_trip_split_anywhere(
            msgs in proptest::collection::vec(gateway_msg(), 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                bytes.extend(encode(m).unwrap());
            }
            let mut d = Decoder::<GatewayMsg>::new();
            prop_assert_eq!(feed(&mut d, &bytes, &cuts), msgs);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
