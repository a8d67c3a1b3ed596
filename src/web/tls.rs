//! HTTPS for a panel on a non-loopback address: a self-signed certificate made with `rcgen` at
//! the first start (`web.crt` and `web.key`, 0600, in the state directory; kept across
//! restarts so the fingerprint the owner checked stays the same), served with rustls (ring).
//! The browser cannot know the certificate, so its SHA-256 fingerprint is printed next to
//! every login link for the owner to compare.
//!
//! [`WebListener`] accepts TCP and, when TLS is on, runs each handshake in its own task (10 s
//! at most), so a slow or silent client never holds up the others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Certificate file in the state directory.
pub const CERT_FILE: &str = "web.crt";
/// Private key file in the state directory (0600).
pub const KEY_FILE: &str = "web.key";
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server.
const ACCEPTED_QUEUE: usize = 64;

/// The panel's certificate and key, and the certificate's fingerprint.
#[derive(Clone)]
pub struct Certificate {
    cert_der: Vec<u8>,
    key_der: Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// SHA-256 of the DER certificate, `AB:CD:…` (as browsers show it).
    pub fingerprint: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// `AB:CD:…`: SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Certificate {
    /// Loads the certificate of `state_dir`, or makes one for `names` (host names and
    /// addresses the panel is reached at) and stores it.
    pub fn load_or_create(state_dir: &Path, names: &[String]) -> Result<Self> {
        let cert_path = state_dir.join(CERT_FILE);
        let key_path = state_dir.join(KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key_pem = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key_path)
                    .with_context(|| format!("cannot read {}", key_path.display()))?,
            );
            return Self::from_pem(&cert_pem, &key_pem).with_context(|| {
                format!(
                    "{} or {} is damaged; remove both to make a new certificate",
                    cert_path.display(),
                    key_path.display()
                )
            });
        }
        let certified = rcgen::generate_simple_self_signed(names.to_vec())
            .context("cannot make the web panel's certificate")?;
        let key_pem = zeroize::Zeroizing::new(certified.key_pair.serialize_pem());
        crate::state::write_atomic(&key_path, key_pem.as_bytes())?;
        crate::state::write_atomic(&cert_path, certified.cert.pem().as_bytes())?;
        tracing::info!(
            file = %cert_path.display(),
            "made a self-signed certificate for the web panel"
        );
        Self::from_pem(&certified.cert.pem(), &key_pem)
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert_der = pem_body(cert_pem, "CERTIFICATE").context("no certificate in the file")?;
        let key_der = zeroize::Zeroizing::new(
            pem_body(key_pem, "PRIVATE KEY").context("no private key in the file")?,
        );
        Ok(Self {
            fingerprint: fingerprint(&cert_der),
            cert_der,
            key_der: Arc::new(key_der),
        })
    }

    fn server_config(&self) -> Result<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls has no protocol versions")?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.cert_der.clone())], key)
            .context("the web panel's certificate and key do not fit together")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The base64 body of the first PEM block labelled `label`.
fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A connection to the panel, plain or TLS.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The client's address, for the rate limit and the session list.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Accepts the panel's connections: plain TCP, or TLS handshaken off the accept loop.
pub struct WebListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(Box<dyn Conn>, SocketAddr)>,
}

impl std::fmt::Debug for WebListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebListener")
            .field("local", &self.local)
            .finish()
    }
}

impl WebListener {
    /// Serves `listener`, over TLS with `certificate` when given. The accept task ends with
    /// the listener (when the returned value is dropped).
    pub fn new(listener: TcpListener, certificate: Option<&Certificate>) -> Result<Self> {
        let local = listener
            .local_addr()
            .context("the web listener has no address")?;
        let acceptor = match certificate {
            Some(certificate) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                certificate.server_config()?,
            ))),
            None => None,
        };
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(10);
            loop {
                let (stream, addr) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of descriptors, typically: pause, as the control socket does.
                            tracing::debug!(%error, "web panel accept failed");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(1));
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                pause = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        if tx
                            .send((Box::new(stream) as Box<dyn Conn>, addr))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send((Box::new(tls) as Box<dyn Conn>, addr)).await;
                                }
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, %addr, "web panel TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "web panel TLS handshake timed out")
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(Self { local, accepted })
    }
}

impl axum::serve::Listener for WebListener {
    type Io = Box<dyn Conn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, WebListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, WebListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "203.0.113.10".to_owned()];
        let first = Certificate::load_or_create(dir.path(), &names).unwrap();
        let again = Certificate::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        for file in [CERT_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert!(first.server_config().is_ok());
        assert!(!format!("{first:?}").contains("PRIVATE"));
    }
}
