//! The direct socket's framing, shared by its two ends: each message is a
//! `PushTaskRequest`/`PushTaskReply` (or the `DirectHello` that opens a
//! connection) framed by a little-endian `u32` length.

use bytes::{Buf, BytesMut};
use ray_abi::RayError;
use ray_proto::*;

/// `message` framed for a direct connection.
pub(crate) fn frame<M: prost::Message>(message: &M) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    message.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Takes the first whole message off `buf`, if it has arrived; refuses one longer
/// than `limit` before buffering it.
pub(crate) fn next_message<M: prost::Message + Default>(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<M>, RayError> {
    let Some(header) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
    if len > limit {
        return Err(RayError::Internal(format!("a direct call message of {len} bytes exceeds the {limit}-byte limit")));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    M::decode(buf.split_to(len).freeze())
        .map(Some)
        .map_err(|e| RayError::Internal(format!("a direct call message did not decode: {e}")))
}

/// A reply as its caller sees it: the worker's own failure to run the call is an
/// error, as a failed unary call would be.
pub(crate) fn reply_result(mut reply: PushTaskReply) -> Result<PushTaskReply, tonic::Status> {
    if reply.error.is_empty() {
        Ok(reply)
    } else {
        Err(to_status(&RayError::from_bytes(&std::mem::take(&mut reply.error))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ray_proto::MAX_MESSAGE_BYTES;

    proptest! {
        /// However the bytes arrive, whole messages come out in order, and none early.
        #[test]
        fn messages_survive_any_split(
            replies in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), any::<u32>()), 0..8),
            cuts in prop::collection::vec(0usize..64, 0..16),
        ) {
            let replies: Vec<PushTaskReply> = replies
                .into_iter()
                .map(|(id, pid)| PushTaskReply { task_id: id.into(), worker_pid: pid, ..PushTaskReply::default() })
                .collect();
            let wire: Vec<u8> = replies.iter().flat_map(frame).collect();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.into_iter().chain([usize::MAX]) {
                let (now, later) = rest.split_at(cut.min(rest.len()));
                buf.extend_from_slice(now);
                rest = later;
                while let Some(reply) = next_message::<PushTaskReply>(&mut buf, MAX_MESSAGE_BYTES).unwrap() {
                    decoded.push(reply);
                }
            }
            prop_assert_eq!(decoded, replies);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn an_oversized_message_is_refused_before_it_arrives() {
        let mut buf = BytesMut::from(&((MAX_MESSAGE_BYTES as u32) + 1).to_le_bytes()[..]);
        assert!(next_message::<PushTaskReply>(&mut buf, MAX_MESSAGE_BYTES).is_err());
    }
}
