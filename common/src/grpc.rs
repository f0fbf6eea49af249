//! The distributor's gRPC service, `gophers.Gopher`, as it goes over the wire: one unary
//! method, `Answer`, whose reply carries the very JSON answer `GET /` gives, so the
//! requester reads both the same way. As a `.proto`:
//!
//! ```text
//! syntax = "proto3";
//! package gophers;
//! service Gopher { rpc Answer (AnswerRequest) returns (AnswerReply); }
//! message AnswerRequest {}
//! message AnswerReply { string json = 1; }
//! ```
//!
//! The distributor serves it with tonic (these messages, prost's codec); the requester
//! asks with reqwest, so that its calls go through the same egress proxy as its HTTP ones,
//! framing the message itself: one byte (compressed or not; never here), its length in four
//! bytes big-endian, and the protobuf bytes; the call's status is the `grpc-status`
//! trailer (or header, in a trailers-only answer).

use prost::Message;

/// The method's path: `/PACKAGE.SERVICE/METHOD`.
pub const ANSWER_PATH: &str = "/gophers.Gopher/Answer";

/// The content type of gRPC requests and answers.
pub const CONTENT_TYPE: &str = "application/grpc";

/// gRPC's `OK` and `UNAVAILABLE` status codes.
pub const OK: u32 = 0;
pub const UNAVAILABLE: u32 = 14;

/// `Answer`'s request: nothing to say.
#[derive(Clone, PartialEq, Message)]
pub struct AnswerRequest {}

/// `Answer`'s reply: the distributor's JSON answer.
#[derive(Clone, PartialEq, Message)]
pub struct AnswerReply {
    #[prost(string, tag = "1")]
    pub json: String,
}

/// `message` as one length-prefixed gRPC message.
pub fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = Vec::with_capacity(bytes.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// The one message of a unary call's body, or why there is none.
pub fn unframe<M: Message + Default>(body: &[u8]) -> Result<M, String> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(format!(
            "{} bytes is no gRPC message (the length prefix is 5 bytes)",
            body.len()
        ));
    };
    if head[0] != 0 {
        return Err("a compressed gRPC message (none was asked for)".to_owned());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let Some(bytes) = rest.get(..len) else {
        return Err(format!(
            "the gRPC message says {len} bytes, {} came",
            rest.len()
        ));
    };
    M::decode(bytes).map_err(|e| format!("not the expected message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_short_bodies_are_refused() {
        let reply = AnswerReply {
            json: r#"{"version":"v2"}"#.to_owned(),
        };
        let framed = frame(&reply);
        assert_eq!(framed[..5], [0, 0, 0, 0, 18]);
        assert_eq!(unframe::<AnswerReply>(&framed), Ok(reply));
        assert_eq!(frame(&AnswerRequest {}), [0, 0, 0, 0, 0]);
        assert!(unframe::<AnswerReply>(&framed[..3]).is_err_and(|e| e.contains("5 bytes")));
        assert!(unframe::<AnswerReply>(&framed[..10]).is_err_and(|e| e.contains("18 bytes")));
        let mut compressed = framed.clone();
        compressed[0] = 1;
        assert!(unframe::<AnswerReply>(&compressed).is_err_and(|e| e.contains("compressed")));
    }
}
