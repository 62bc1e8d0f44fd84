//! A minimal HTTP/1.1 keep-alive client: one request at a time on one connection, bodies
//! framed by Content-Length. Just enough to drive tcphub's API without a client stack whose
//! own costs would blur the comparison.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection to an HTTP server.
pub struct HttpConn {
    server: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    last_used: Instant,
}

/// Idle time after which a server may have closed a keep-alive connection (Node closes after
/// 5 s): the connection is checked before it is used again.
const MAY_HAVE_CLOSED_AFTER: Duration = Duration::from_secs(1);

impl HttpConn {
    /// Opens a connection to `server`.
    pub async fn connect(server: SocketAddr) -> Result<Self> {
        Ok(HttpConn {
            server,
            stream: open(server).await?,
            buf: Vec::with_capacity(1024),
            last_used: Instant::now(),
        })
    }

    /// `GET path`; returns the status and the body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.server);
        self.exchange(head.into_bytes()).await
    }

    /// `POST path` with a JSON body; returns the status and the body.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.server,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.exchange(request).await
    }

    async fn exchange(&mut self, request: Vec<u8>) -> Result<(u16, Vec<u8>)> {
        // A server may close an idle keep-alive connection between requests; reopen then, and
        // only then, so that no request is ever sent twice. A connection in steady use is not
        // probed (the probe is a `recv` per request, paid on every target alike).
        if self.last_used.elapsed() > MAY_HAVE_CLOSED_AFTER && self.closed_by_server()? {
            self.stream = open(self.server).await?;
        }
        self.stream.write_all(&request).await?;
        let response = self.read_response().await;
        self.last_used = Instant::now();
        response
    }

    fn closed_by_server(&mut self) -> Result<bool> {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Ok(0) => Ok(true),
            Ok(_) => bail!("{}: bytes arrived with no request outstanding", self.server),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(_) => Ok(true),
        }
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>)> {
        self.buf.clear();
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head =
            std::str::from_utf8(&self.buf[..head_end]).context("response head is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        let mut length = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!(
                    "{}: chunked responses are not supported by the bench client",
                    self.server
                );
            }
        }
        let length = length.unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        if self.buf.len() > head_end + length {
            bail!(
                "{}: more bytes than the one response asked for",
                self.server
            );
        }
        Ok((status, self.buf[head_end..].to_vec()))
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("{}: connection closed mid-response", self.server);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

async fn open(server: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(server)
        .await
        .with_context(|| format!("HTTP connect {server}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
