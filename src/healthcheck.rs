//! `tcphub healthcheck`: one `GET /healthz`, over plain HTTP or, when the hub
//! serves TLS, over TLS to exactly the hub's own certificate.
//!
//! The probe runs beside the hub (a container's `HEALTHCHECK`), so it reads the
//! same `TCPHUB_TLS_CERT` file and accepts the server only if it presents that
//! certificate: no CA and no host name are needed to know it is talking to the hub.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tcphub::config::HostPort;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, SignatureScheme,
};

/// How long the probe waits for an answer.
const PATIENCE: Duration = Duration::from_secs(3);

/// Succeeds when `GET /healthz` on `http_addr` answers 200; over TLS when
/// `tls_cert` names the hub's certificate.
pub async fn probe(http_addr: &HostPort, tls_cert: Option<&Path>) -> anyhow::Result<()> {
    let mut http_addr = crate::resolve("--http-addr", http_addr).await?;
    if http_addr.ip().is_unspecified() {
        http_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connector = tls_cert.map(pinned_to).transpose()?;
    let status = tokio::time::timeout(PATIENCE, status_of_healthz(http_addr, connector))
        .await
        .context("no answer in time")??;
    if status != "200" {
        bail!("/healthz answered {status}");
    }
    Ok(())
}

async fn status_of_healthz(
    addr: SocketAddr,
    connector: Option<TlsConnector>,
) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    match connector {
        None => ask(tcp, addr).await,
        Some(connector) => {
            let tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .with_context(|| format!("TLS handshake with {addr} failed"))?;
            ask(tls, addr).await
        }
    }
}

/// The status code of a one-shot `GET /healthz` over HTTP/1.0.
async fn ask(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await?;
    let head = String::from_utf8_lossy(&head[..n]);
    match head.split_whitespace().nth(1) {
        Some(status) => Ok(status.to_owned()),
        None => bail!("not an HTTP answer"),
    }
}

/// A TLS client that accepts only the first certificate of the PEM file at `path`.
fn pinned_to(path: &Path) -> anyhow::Result<TlsConnector> {
    let mut chain = tcphub::tls::certificate_chain(path)?;
    // The chain is never empty: the leaf comes first.
    let expected = chain.swap_remove(0);
    let provider = Arc::new(ring::default_provider());
    let verifier = PinnedCertificate {
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Trusts one certificate, byte for byte, and checks that the server holds its
/// key (the handshake signatures), as rustls's own verifier would.
#[derive(Debug)]
struct PinnedCertificate {
    expected: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
