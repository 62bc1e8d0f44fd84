//! Operator commands for groups and mailboxes: `groups`, `group-send`,
//! `mailboxes` and `purge`, each one request and its printout.

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, ApiArgs, message};
use super::commands::print;
use super::output;

/// Arguments of `tcphub groups` and `tcphub mailboxes`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only those whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub group-send`.
#[derive(Debug, Args)]
pub struct GroupSendArgs {
    /// The group's name.
    pub group: String,
    /// The message: JSON when it parses as JSON, else sent as a string.
    pub message: String,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `tcphub purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The name whose stored messages are deleted.
    pub name: String,
    /// The API to ask.
    #[command(flatten)]
    pub api: ApiArgs,
}

pub(super) async fn groups(args: ListArgs) -> anyhow::Result<()> {
    list(args, "groups", "group", |group| {
        format!(
            "{} {}",
            output::text(&group["name"]),
            output::text(&group["members"])
        )
    })
    .await
}

pub(super) async fn group_send(args: GroupSendArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let request = api
        .request(Method::POST, &["groups", &args.group, "send"])
        .json(&json!({"message": message(&args.message)}));
    let body = api.json(request).await?;
    print(&api, &body, output::broadcast)
}

pub(super) async fn mailboxes(args: ListArgs) -> anyhow::Result<()> {
    list(args, "mailboxes", "mailbox", |mailbox| {
        format!(
            "{} {} pending since {}",
            output::text(&mailbox["name"]),
            output::text(&mailbox["pending"]),
            output::text(&mailbox["oldestAt"]),
        )
    })
    .await
}

pub(super) async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    api.send(api.request(Method::DELETE, &["mailboxes", &args.name]))
        .await?;
    let body: Value = json!({"name": args.name, "purged": true});
    print(&api, &body, |_| {
        format!("purged the mailbox of {}", args.name)
    })
}

/// `GET /{collection}` with an optional `prefix`, printed one `row` per item.
async fn list(
    args: ListArgs,
    collection: &str,
    noun: &str,
    row: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let query: Vec<_> = args
        .prefix
        .iter()
        .map(|prefix| ("prefix", prefix))
        .collect();
    let body = api
        .json(api.request(Method::GET, &[collection]).query(&query))
        .await?;
    print(&api, &body, |body| {
        output::listing(body, collection, noun, row)
    })
}
