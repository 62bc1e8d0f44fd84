//! The operator's side of the `tcphub` binary: subcommands that mint client
//! tokens, behave like a device, and drive a running hub through its HTTP API
//! (clients, groups, mailboxes, events).
//!
//! Each returns an error for `main` to print on one line (exit status 1); clap
//! refuses bad usage with status 2. Long-running commands (`client`, `events`)
//! end with status 0 on Ctrl-C or SIGTERM.

mod api;
mod collections;
mod commands;
mod device;
mod output;
mod token;

use clap::{Args, CommandFactory, Subcommand};
use clap_complete::Shell;

pub use collections::{GroupSendArgs, ListArgs, PurgeArgs};
pub use commands::{BroadcastArgs, ClientsArgs, EventsArgs, KickArgs, SendArgs};
pub use device::ClientArgs;
pub use token::TokenArgs;

/// The operator subcommands.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Print a client token that `--client-auth jwt` accepts for NAME.
    Token(TokenArgs),
    /// Behave like a device: connect, sync as NAME, print every frame received,
    /// reconnect with backoff when the connection drops.
    Client(ClientArgs),
    /// List the live clients (GET /clients).
    Clients(ClientsArgs),
    /// Push MESSAGE to the client NAME (POST /clients/{name}/send).
    Send(SendArgs),
    /// Push MESSAGE to every live client (POST /broadcast).
    Broadcast(BroadcastArgs),
    /// Disconnect the client NAME with `bye` `kicked` (DELETE /clients/{name}).
    Kick(KickArgs),
    /// Follow the hub's events (GET /events), one per line.
    Events(EventsArgs),
    /// List the groups with members (GET /groups).
    Groups(ListArgs),
    /// Push MESSAGE to every member of GROUP (POST /groups/{group}/send).
    GroupSend(GroupSendArgs),
    /// List the names with stored messages (GET /mailboxes).
    Mailboxes(ListArgs),
    /// Delete the messages stored for NAME (DELETE /mailboxes/{name}).
    Purge(PurgeArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// Arguments of `tcphub completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Runs one operator subcommand to its end.
pub async fn run(command: OpsCommand) -> anyhow::Result<()> {
    match command {
        OpsCommand::Token(args) => token::run(&args),
        OpsCommand::Client(args) => until_interrupted(device::run(args)).await,
        OpsCommand::Clients(args) => commands::clients(args).await,
        OpsCommand::Send(args) => commands::send(args).await,
        OpsCommand::Broadcast(args) => commands::broadcast(args).await,
        OpsCommand::Kick(args) => commands::kick(args).await,
        OpsCommand::Events(args) => until_interrupted(commands::events(args)).await,
        OpsCommand::Groups(args) => collections::groups(args).await,
        OpsCommand::GroupSend(args) => collections::group_send(args).await,
        OpsCommand::Mailboxes(args) => collections::mailboxes(args).await,
        OpsCommand::Purge(args) => collections::purge(args).await,
        OpsCommand::Completions(args) => {
            let mut script = Vec::new();
            let mut command = crate::config::Cli::command();
            clap_complete::generate(args.shell, &mut command, "tcphub", &mut script);
            output::line(String::from_utf8_lossy(&script).trim_end())
        }
    }
}

/// Runs `work` until it ends or the process is asked to stop, which is a
/// success: following is what the operator asked for until then.
async fn until_interrupted(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        result = work => result,
        stopped = interrupted() => stopped,
    }
}

#[cfg(unix)]
async fn interrupted() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn interrupted() -> anyhow::Result<()> {
    Ok(tokio::signal::ctrl_c().await?)
}
