//! The HTTP client of the operator commands: where the API is, its token, and
//! how an answer becomes a JSON value or a one-line error (a problem's `detail`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;

/// How long connecting to the API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the HTTP API is and how to be let in.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the hub's HTTP API.
    #[arg(long, env = "TCPHUB_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: Url,
    /// Bearer token of the API (the hub's --api-token).
    #[arg(long, env = "TCPHUB_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// PEM certificate(s) to trust for an https:// API URL (e.g. the hub's --tls-cert).
    #[arg(long, env = "TCPHUB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Print the API's JSON answers, one per line, instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A client of one hub's HTTP API.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// Problem documents go to stdout too, for scripts.
    pub json: bool,
}

impl Api {
    /// A client for the API `args` describe.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(path) = &args.tls_ca {
            for cert in crate::tls::certificate_chain(path)? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .with_context(|| format!("cannot use {}", path.display()))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Api {
            http: builder.build().context("cannot set up the HTTP client")?,
            base: args.api_url.clone(),
            token: args.api_token.clone(),
            json: args.json,
        })
    }

    /// A request for the API path made of `segments` (each percent-encoded).
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`: the answer when its status is a success, else an error
    /// carrying the problem's `detail`.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<Value>(&body) {
            Ok(problem) => {
                if self.json {
                    super::output::line(&problem)?;
                }
                match problem["detail"].as_str() {
                    Some(detail) => Err(anyhow!("{detail}")),
                    None => Err(anyhow!("the API answered {status}: {problem}")),
                }
            }
            Err(_) => Err(anyhow!("the API answered {status}")),
        }
    }

    /// Sends `request` and reads its JSON answer.
    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .context("the API's answer is not JSON")
    }

    /// One line on why the API could not be reached.
    pub fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        let mut cause: &dyn std::error::Error = &err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        if err.is_connect() || err.is_timeout() {
            anyhow!("cannot connect to the API at {}: {cause}", self.base)
        } else {
            anyhow!("request to the API at {} failed: {cause}", self.base)
        }
    }
}

/// MESSAGE as given: JSON when it parses as JSON, else the text as a string.
pub fn message(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_json_when_they_parse_else_strings() {
        assert_eq!(message(r#"{"led":"on"}"#), json!({"led": "on"}));
        assert_eq!(message("42"), json!(42));
        assert_eq!(message("hello there"), json!("hello there"));
        assert_eq!(message("{broken"), json!("{broken"));
    }

    #[test]
    fn paths_are_appended_and_encoded() {
        let args = ApiArgs {
            api_url: "http://127.0.0.1:8080/hub/".parse().unwrap(),
            api_token: None,
            tls_ca: None,
            json: false,
        };
        let api = Api::new(&args).unwrap();
        let request = api
            .request(Method::POST, &["clients", "a b?", "send"])
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/hub/clients/a%20b%3F/send"
        );
    }
}
