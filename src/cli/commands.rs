//! The HTTP API's operator commands: `clients`, `send`, `broadcast`, `kick`
//! and `events`, each one request (or one stream) and its printout.

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, ApiArgs, message};
use super::output;

/// Arguments of `tcphub clients`.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// Only clients whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only named clients.
    #[arg(long)]
    pub named: bool,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The client's name.
    pub name: String,
    /// The message: JSON when it parses as JSON, else sent as a string.
    pub message: String,
    /// Wait until the client acknowledges the message (200 `acked`, or 504 `ack_timeout`).
    #[arg(long)]
    pub wait_ack: bool,
    /// Seconds the message may wait in the name's mailbox for a client that is not connected.
    #[arg(long)]
    pub ttl: Option<u64>,
    /// With `--ttl`: keep the message stored until the client acks it (at-least-once).
    #[arg(long, requires = "ttl")]
    pub until_ack: bool,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub broadcast`.
#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// The message: JSON when it parses as JSON, else sent as a string.
    pub message: String,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub kick`.
#[derive(Debug, Args)]
pub struct KickArgs {
    /// The client's name.
    pub name: String,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only these event types, comma-separated (e.g. client.named,client.disconnected).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

pub(super) async fn clients(args: ClientsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut query = Vec::new();
    if let Some(prefix) = &args.prefix {
        query.push(("prefix", prefix.clone()));
    }
    if args.named {
        query.push(("named", "true".to_owned()));
    }
    let body = api
        .json(api.request(Method::GET, &["clients"]).query(&query))
        .await?;
    print(&api, &body, output::clients_table)?;
    Ok(())
}

pub(super) async fn send(args: SendArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut query = Vec::new();
    if args.wait_ack {
        query.push(("wait", "ack".to_owned()));
    }
    if let Some(ttl) = args.ttl {
        query.push(("ttl", ttl.to_string()));
    }
    if args.until_ack {
        query.push(("until", "ack".to_owned()));
    }
    let request = api
        .request(Method::POST, &["clients", &args.name, "send"])
        .query(&query)
        .json(&json!({"message": message(&args.message)}));
    let body = api.json(request).await?;
    print(&api, &body, |body| output::sent(&args.name, body))?;
    Ok(())
}

pub(super) async fn broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let request = api
        .request(Method::POST, &["broadcast"])
        .json(&json!({"message": message(&args.message)}));
    let body = api.json(request).await?;
    print(&api, &body, output::broadcast)?;
    Ok(())
}

pub(super) async fn kick(args: KickArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    api.send(api.request(Method::DELETE, &["clients", &args.name]))
        .await?;
    let body = json!({"name": args.name, "kicked": true});
    print(&api, &body, |_| format!("kicked {}", args.name))?;
    Ok(())
}

pub(super) async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut request = api.request(Method::GET, &["events"]);
    if !args.types.is_empty() {
        request = request.query(&[("types", args.types.join(","))]);
    }
    let mut response = api.send(request).await?;
    // The hub subscribes the follower before it answers: from here on, nothing is missed.
    eprintln!("following {}", response.url());
    let mut stream = output::SseLines::default();
    loop {
        let chunk = response.chunk().await.map_err(|err| api.unreachable(err))?;
        let Some(chunk) = chunk else {
            // The hub closed the stream: it is shutting down.
            return Ok(());
        };
        for data in stream.push(&chunk) {
            let event: Value = serde_json::from_str(&data)
                .with_context(|| format!("an event is not JSON: {data}"))?;
            print(&api, &event, output::event_line)?;
        }
    }
}

/// Prints `body` as JSON with `--json`, else as `human` renders it.
pub(super) fn print(
    api: &Api,
    body: &Value,
    human: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    if api.json {
        output::line(body)
    } else {
        output::line(human(body))
    }
}
