//! The chat client's connection to a member: the local node's `STATE_DIR/pq4.sock`
//! (length-prefixed CBOR frames of [`Request`]/[`Response`], the same types as the libp2p
//! protocol `/constella/pq4/1.0.0`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use constella_behaviours::pq4::{self, Op, Request, Response};
use tokio::net::UnixStream;

use crate::daemon::chat::{SOCKET, read_frame, write_frame};

/// How long one operation may take (a registration asks three holders three times).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the messaging service.
#[derive(Debug)]
pub struct Link {
    stream: UnixStream,
}

impl Link {
    /// Connects to the local member (`state_dir`), or to `via` over libp2p.
    pub async fn connect(state_dir: &Path, via: Option<&str>) -> Result<Self> {
        if let Some(via) = via {
            bail!(
                "--via {via}: reaching a member over libp2p as a non-member client is not \
                 implemented yet; run the command on a member with --state-dir"
            );
        }
        let path = state_dir.join(SOCKET);
        let stream = UnixStream::connect(&path).await.with_context(|| {
            format!(
                "the constella daemon is not running (no chat service on {})",
                path.display()
            )
        })?;
        Ok(Self { stream })
    }

    /// One request and its answer.
    pub async fn call(&mut self, op: Op) -> Result<Response> {
        let mut out = Vec::new();
        ciborium::into_writer(&Request::new(op), &mut out).context("cannot encode the request")?;
        let exchange = async {
            write_frame(&mut self.stream, &out).await?;
            read_frame(&mut self.stream, pq4::MAX_RESPONSE_BYTES as usize).await
        };
        let frame = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .context("the node did not answer within 30 s")?
            .context("the connection to the node failed")?
            .context("the node closed the connection")?;
        ciborium::from_reader(frame.as_slice()).context("the node's answer is malformed")
    }
}
