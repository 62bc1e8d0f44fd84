//! `tcphub client`: a device on the command line. It connects (over TLS with
//! `--tls-ca`), sends `sync`, prints every frame the hub sends as it came, acks
//! pushed messages with `--ack`, and reconnects with a doubling backoff when
//! the connection drops. Frames go to stdout; what happens to the connection
//! goes to stderr.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::config::HostPort;

/// The first pause before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest a connect, or a TLS handshake, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Arguments of `tcphub client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The name to sync as.
    pub name: String,
    /// The hub's TCP address.
    #[arg(long, env = "TCPHUB_CONNECT", default_value = "127.0.0.1:9000")]
    pub connect: HostPort,
    /// Acknowledge every pushed message with `{"type":"ack","id":…}`.
    #[arg(long)]
    pub ack: bool,
    /// Token sent in `sync` (for `--client-auth jwt`; see `tcphub token`).
    #[arg(long, env = "TCPHUB_CLIENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connect over TLS, trusting the PEM certificate(s) in this file.
    #[arg(long, env = "TCPHUB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Groups sent in `sync` as `"groups":[…]`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
}

/// How a connection ended.
enum Ended {
    /// The hub said `bye` with this reason, or closed without one.
    Closed {
        reason: Option<String>,
        welcomed: bool,
    },
    /// Connecting or reading failed.
    Failed { err: anyhow::Error, welcomed: bool },
}

pub(super) async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let tls = args.tls_ca.as_deref().map(connector).transpose()?;
    let sync = sync_frame(&args);
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = session(&args, tls.as_ref(), &sync).await;
        let welcomed = match ended {
            Ended::Closed { reason, welcomed } => {
                match reason.as_deref() {
                    // Another connection holds the name now, or this one may
                    // never hold it: reconnecting would not help.
                    Some(reason @ ("replaced" | "unauthorized")) => {
                        bail!("the hub said bye: {reason}")
                    }
                    Some(reason) => eprintln!("the hub said bye: {reason}"),
                    None => eprintln!("the hub closed the connection"),
                }
                welcomed
            }
            Ended::Failed { err, welcomed } => {
                eprintln!("{err:#}");
                welcomed
            }
        };
        if welcomed {
            backoff = BACKOFF_MIN;
        }
        eprintln!("reconnecting in {:.1} s", backoff.as_secs_f64());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The `sync` frame, as one line.
fn sync_frame(args: &ClientArgs) -> String {
    let mut sync = json!({"type": "sync", "clientName": args.name});
    if let Some(token) = &args.token {
        sync["token"] = json!(token);
    }
    if !args.groups.is_empty() {
        sync["groups"] = json!(args.groups);
    }
    format!("{sync}\n")
}

/// One connection, from connect to close.
async fn session(args: &ClientArgs, tls: Option<&TlsConnector>, sync: &str) -> Ended {
    let connecting = TcpStream::connect((args.connect.host(), args.connect.port()));
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    let stream = match connected {
        Ok(stream) => stream,
        Err(err) => {
            let err =
                anyhow::Error::new(err).context(format!("cannot connect to {}", args.connect));
            return Ended::Failed {
                err,
                welcomed: false,
            };
        }
    };
    let _ = stream.set_nodelay(true);
    eprintln!("connected to {}", args.connect);
    let mut welcomed = false;
    let result = match tls {
        None => exchange(stream, args.ack, sync, &mut welcomed).await,
        Some(tls) => match handshake(tls, &args.connect, stream).await {
            Ok(stream) => exchange(stream, args.ack, sync, &mut welcomed).await,
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(reason) => Ended::Closed { reason, welcomed },
        Err(err) => Ended::Failed { err, welcomed },
    }
}

async fn handshake(
    tls: &TlsConnector,
    hub: &HostPort,
    stream: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(hub.host().to_owned())
        .with_context(|| format!("{} is not a valid TLS server name", hub.host()))?;
    tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, stream))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        .with_context(|| format!("TLS handshake with {hub} failed"))
}

/// Sends `sync`, then prints and answers frames until the hub closes the
/// connection; returns the reason of its `bye`, if it sent one.
async fn exchange(
    stream: impl AsyncRead + AsyncWrite,
    ack: bool,
    sync: &str,
    welcomed: &mut bool,
) -> anyhow::Result<Option<String>> {
    let (reader, mut writer) = tokio::io::split(stream);
    writer
        .write_all(sync.as_bytes())
        .await
        .context("cannot send sync")?;
    let mut lines = BufReader::new(reader).lines();
    let mut bye = None;
    while let Some(line) = lines.next_line().await.context("connection lost")? {
        super::output::line(&line)?;
        let Ok(frame) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("welcome") => *welcomed = true,
            Some("bye") => bye = frame["reason"].as_str().map(str::to_owned),
            Some("message") if ack => {
                let answer = format!("{}\n", json!({"type": "ack", "id": frame["id"]}));
                writer
                    .write_all(answer.as_bytes())
                    .await
                    .context("cannot send ack")?;
            }
            _ => {}
        }
    }
    Ok(bye)
}

/// A TLS client trusting exactly the certificates in the PEM file at `path`.
fn connector(path: &Path) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in crate::tls::certificate_chain(path)? {
        roots
            .add(cert)
            .with_context(|| format!("cannot trust {}", path.display()))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_carries_the_token_and_groups_only_when_given() {
        let mut args = ClientArgs {
            name: "dev-1".into(),
            connect: "127.0.0.1:9000".parse().unwrap(),
            ack: false,
            token: None,
            tls_ca: None,
            groups: Vec::new(),
        };
        let frame: Value = serde_json::from_str(&sync_frame(&args)).unwrap();
        assert_eq!(frame, json!({"type": "sync", "clientName": "dev-1"}));
        args.token = Some("t".into());
        args.groups = vec!["a".into(), "b".into()];
        let frame: Value = serde_json::from_str(&sync_frame(&args)).unwrap();
        assert_eq!(
            frame,
            json!({"type": "sync", "clientName": "dev-1", "token": "t", "groups": ["a", "b"]})
        );
    }
}
