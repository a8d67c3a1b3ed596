//! The wire format of the beat protocol: on one long-lived stream per connection and
//! direction, frames of a 2-byte big-endian length followed by that many bytes (an AEAD
//! envelope of [`crate::gossip`]; this layer neither reads nor checks it).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name. Fixed rather than keyed by the network tag: a stranger that opens a
/// stream learns nothing from it, and every frame on it is sealed under the network's gossip
/// key, which only members hold.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/constella/beat/1.0.0");

/// Largest frame either side sends or accepts: a sealed heartbeat is a few hundred bytes
/// (name, priority, a few addresses); a larger frame is refused and its stream dropped.
pub const MAX_FRAME_BYTES: usize = 8 * 1024;

/// Writes one frame and flushes it; gives the stream back for the next.
pub(super) async fn send_frame<S: AsyncWrite + Unpin>(
    mut stream: S,
    frame: &[u8],
) -> io::Result<S> {
    let len = u16::try_from(frame.len())
        .ok()
        .filter(|len| usize::from(*len) <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "beat frame too large"))?;
    // One write: the length and the body in one yamux frame, one noise frame and (with
    // TCP_NODELAY) one segment. Two writes sent the 2-byte length as a segment of its own,
    // doubling the packets and the ways a heartbeat can be held back by a loss.
    let mut whole = Vec::with_capacity(2 + frame.len());
    whole.extend_from_slice(&len.to_be_bytes());
    whole.extend_from_slice(frame);
    stream.write_all(&whole).await?;
    stream.flush().await?;
    Ok(stream)
}

/// Reads one frame; gives the stream back for the next.
pub(super) async fn recv_frame<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(S, Vec<u8>)> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("beat frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok((stream, frame))
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    #[test]
    fn frames_round_trip_one_after_another() {
        let written = block_on(async {
            let stream = send_frame(Cursor::new(Vec::new()), b"first").await?;
            send_frame(stream, b"").await
        })
        .unwrap()
        .into_inner();
        assert_eq!(&written[..2], &[0, 5]);
        let (stream, first) = block_on(recv_frame(Cursor::new(written))).unwrap();
        let (_, second) = block_on(recv_frame(stream)).unwrap();
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&b"first"[..], &b""[..])
        );
    }

    #[test]
    fn an_oversized_frame_is_neither_sent_nor_read() {
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        let sent = block_on(send_frame(Cursor::new(Vec::new()), &big));
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let mut claimed = u16::try_from(MAX_FRAME_BYTES + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        claimed.extend_from_slice(&big);
        let read = block_on(recv_frame(Cursor::new(claimed)));
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_short_frame() {
        let read = block_on(recv_frame(Cursor::new(vec![0, 9, 1, 2, 3])));
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
