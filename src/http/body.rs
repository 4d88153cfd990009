//! Reading a request's body: up to the value limit, and a refused one read
//! and dropped so its sender sees the answer.

use super::*;

/// Reads the body up to the value limit.
///
/// A body over the limit is refused with 413, and the client must be able
/// to read that answer. A client that sent `Expect: 100-continue` is
/// answered before it sends the body. One that sends the body at once (most
/// libraries) is still writing when the answer is ready: closing then would
/// reset its connection before it reads the 413 (a broken pipe on its side),
/// so the rest of the body is read and dropped first, up to
/// [`MAX_DRAIN_BYTES`] and [`DRAIN_TIME`]; past those the connection closes.
pub(super) async fn value_of(headers: &HeaderMap, body: Body) -> Result<Bytes> {
    use futures::StreamExt;
    let too_large = |size: u64| Error::ValueTooLarge {
        size: usize::try_from(size).unwrap_or(usize::MAX),
        limit: MAX_VALUE_BYTES,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let waits_to_send = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut stream = body.into_data_stream();
    if let Some(n) = declared.filter(|&n| n > MAX_VALUE_BYTES as u64) {
        if !waits_to_send {
            drain(&mut stream).await;
        }
        return Err(too_large(n));
    }
    // A body of one chunk (most are) is kept as it came, without a copy.
    let mut first: Option<Bytes> = None;
    let mut more = bytes::BytesMut::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidInput {
            reason: format!("could not read the body: {e}"),
        })?;
        len += chunk.len();
        if len > MAX_VALUE_BYTES {
            drain(&mut stream).await;
            return Err(too_large(len as u64));
        }
        match first.take() {
            None if more.is_empty() => first = Some(chunk),
            held => {
                if let Some(h) = held {
                    more.extend_from_slice(&h);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| more.freeze()))
}

/// The most of a refused body read (and dropped) so that its sender sees the answer.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// The longest time spent reading a refused body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops what is left of a refused body (see [`value_of`]).
async fn drain(stream: &mut axum::body::BodyDataStream) {
    use futures::StreamExt;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}
