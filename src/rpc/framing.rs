//! The framing both ends of a connection use (4-byte length prefix, bincode
//! frames), and the server's guard on request deadlines.

use super::*;

/// Longest deadline a request may carry. tarpc turns a request's deadline into
/// `now + duration`, which panics past the clock's range; an hour is far above any
/// request timeout of ours, so longer deadlines are clamped to it on arrival.
pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// The framing both ends use: 4-byte length prefix, at most [`MAX_FRAME_BYTES`].
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// The server's framing: [`codec`] plus a guard that clamps each request's
/// deadline to [`MAX_DEADLINE`] before tarpc decodes it, so no frame a client
/// sends can make the decoder overflow the clock.
#[derive(Debug)]
pub struct ServerCodec {
    inner: LengthDelimitedCodec,
}

impl Default for ServerCodec {
    fn default() -> Self {
        ServerCodec { inner: codec() }
    }
}

impl Decoder for ServerCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<BytesMut>> {
        Ok(self.inner.decode(src)?.map(clamp_deadline))
    }
}

impl Encoder<Bytes> for ServerCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> std::io::Result<()> {
        self.inner.encode(item, dst)
    }
}

/// Reads one bincode varint (as tokio-serde's default bincode options write
/// integers): a byte below 251 is the value; 251, 252, 253 announce a u16, u32,
/// u64 in little endian. Returns the value and its encoded length.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let (&tag, rest) = b.split_first()?;
    match tag {
        0..=250 => Some((u64::from(tag), 1)),
        251 => Some((u64::from(u16::from_le_bytes(*rest.first_chunk::<2>()?)), 3)),
        252 => Some((u64::from(u32::from_le_bytes(*rest.first_chunk::<4>()?)), 5)),
        253 => Some((u64::from_le_bytes(*rest.first_chunk::<8>()?), 9)),
        _ => None,
    }
}

/// A request frame is `ClientMessage::Request` (varint tag 0) followed by the
/// deadline's seconds (varint u64). Frames of any other shape pass untouched (the
/// decoder then accepts or rejects them on its own).
fn clamp_deadline(frame: BytesMut) -> BytesMut {
    let max = MAX_DEADLINE.as_secs();
    let Some((&0, body)) = frame.split_first() else {
        return frame;
    };
    let Some((secs, len)) = read_varint(body) else {
        return frame;
    };
    if secs <= max {
        return frame;
    }
    let rest = body.get(len..).unwrap_or_default();
    let mut out = BytesMut::with_capacity(rest.len() + 4);
    out.extend_from_slice(&[0, 251]);
    out.extend_from_slice(&u16::try_from(max).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(rest);
    out
}

/// Wraps a connected socket in the client side of the service's transport.
pub fn transport<S, Item, SinkItem>(
    stream: S,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, Bincode<Item, SinkItem>>
where
    S: crate::net::Stream,
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let framed = tokio_util::codec::Framed::new(stream, codec());
    tarpc::serde_transport::new(framed, Bincode::default())
}

/// The server side of an accepted connection: requests in, responses out.
pub type ServerTransport = tokio_serde::Framed<
    tokio_util::codec::Framed<BoxStream, ServerCodec>,
    tarpc::ClientMessage<NodeRequest>,
    tarpc::Response<NodeResponse>,
    Bincode<tarpc::ClientMessage<NodeRequest>, tarpc::Response<NodeResponse>>,
>;

/// Wraps an accepted socket in the server side of the service's transport.
pub fn server_transport(stream: BoxStream) -> ServerTransport {
    let framed = tokio_util::codec::Framed::new(stream, ServerCodec::default());
    tokio_serde::Framed::new(framed, Bincode::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;

    /// A `ClientMessage::Request` for `status` whose deadline is `secs` seconds away.
    fn status_request(secs_varint: &[u8]) -> BytesMut {
        let mut b = vec![0u8];
        b.extend_from_slice(secs_varint);
        b.push(0); // nanos
        b.extend_from_slice(&[0; 16]); // trace id
        b.extend_from_slice(&[0, 1, 7, 4]); // span id, sampling decision, request id, Status
        BytesMut::from(&b[..])
    }

    fn decode(
        frame: &[u8],
    ) -> std::result::Result<tarpc::ClientMessage<NodeRequest>, bincode::Error> {
        bincode::DefaultOptions::new().deserialize(frame)
    }

    #[test]
    fn overflowing_deadlines_are_clamped_before_decoding() {
        let mut huge = vec![253u8];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let clamped = clamp_deadline(status_request(&huge));
        match decode(&clamped).unwrap() {
            tarpc::ClientMessage::Request(r) => {
                let left = r.context.deadline - tarpc::context::now();
                assert!(left <= MAX_DEADLINE, "{left:?}");
                assert!(matches!(r.message, NodeRequest::Status {}));
                assert_eq!(r.id, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ordinary_and_malformed_frames_pass_untouched() {
        let small = status_request(&[5]);
        assert_eq!(clamp_deadline(small.clone()), small);
        for junk in [
            &[][..],
            &[0][..],
            &[0, 253, 1][..],
            &[1, 2, 3][..],
            &[0, 255][..],
        ] {
            assert_eq!(&clamp_deadline(BytesMut::from(junk))[..], junk);
        }
    }

    #[test]
    fn varints_read_like_bincode_writes_them() {
        for v in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let enc = bincode::DefaultOptions::new().serialize(&v).unwrap();
            assert_eq!(read_varint(&enc), Some((v, enc.len())), "{v}");
        }
    }
}
