//! The documents keep step with the code: every frame type, error code, `bye`
//! reason, problem code, event type and route appears in docs/PROTOCOL.md, and
//! every flag in the README's table and docs/DEPLOY.md's settings.
//!
//! The exhaustive `match`es make a new variant fail to compile here until it is
//! listed, and so until it is documented.

use std::collections::BTreeSet;

use clap::CommandFactory;
use serde_json::{Value, json};
use tcphub::api::ApiError;
use tcphub::config::Cli;
use tcphub::events::EventKind;
use tcphub::protocol::{ByeReason, ClientFrame, ErrorCode, HubFrame, Scope};

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The names in `listed` that `doc` lacks in the form `shape` gives them.
fn missing(doc: &str, listed: &[String], shape: impl Fn(&str) -> String) -> Vec<String> {
    listed
        .iter()
        .filter(|name| !doc.contains(&shape(name)))
        .cloned()
        .collect()
}

fn wire(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value).unwrap() {
        Value::String(text) => text,
        other => panic!("{other} is not a string"),
    }
}

fn backticked(name: &str) -> String {
    format!("`{name}`")
}

fn every_bye_reason() -> Vec<String> {
    use ByeReason::*;
    let all = [
        Kicked,
        Replaced,
        Shutdown,
        ServerFull,
        FrameTooLarge,
        IdleTimeout,
        SlowConsumer,
        Unauthorized,
    ];
    for reason in all {
        match reason {
            Kicked | Replaced | Shutdown | ServerFull | FrameTooLarge | IdleTimeout
            | SlowConsumer | Unauthorized => {}
        }
    }
    all.into_iter().map(wire).collect()
}

fn every_error_code() -> Vec<String> {
    use ErrorCode::*;
    let all = [
        InvalidJson,
        InvalidFrame,
        UnknownType,
        InvalidName,
        NameTaken,
        Unauthorized,
        InvalidGroups,
        ForbiddenGroup,
        RegistryUnavailable,
    ];
    for code in all {
        match code {
            InvalidJson | InvalidFrame | UnknownType | InvalidName | NameTaken | Unauthorized
            | InvalidGroups | ForbiddenGroup | RegistryUnavailable => {}
        }
    }
    all.into_iter().map(wire).collect()
}

fn every_scope() -> Vec<String> {
    let all = [Scope::Direct, Scope::Broadcast, Scope::Group];
    for scope in all {
        match scope {
            Scope::Direct | Scope::Broadcast | Scope::Group => {}
        }
    }
    all.into_iter().map(wire).collect()
}

/// The `type` of every frame a client may send.
fn every_client_frame_type() -> Vec<String> {
    let examples = [
        json!({"type": "sync", "clientName": "Client-1"}),
        json!({"type": "info", "message": 1}),
        json!({"type": "ping"}),
        json!({"type": "ack", "id": "m1"}),
        json!({"type": "join", "groups": ["floor-2"]}),
        json!({"type": "leave", "groups": ["floor-2"]}),
    ];
    let mut seen = BTreeSet::new();
    for example in examples {
        let kind = example["type"].as_str().unwrap().to_owned();
        let variant = match ClientFrame::from_value(example).unwrap() {
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::Info { .. } => "info",
            ClientFrame::Ping => "ping",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
        };
        assert_eq!(kind, variant);
        seen.insert(kind);
    }
    seen.into_iter().collect()
}

/// The `type` of every frame the hub sends.
fn every_hub_frame_type() -> Vec<String> {
    let message = json!(1);
    let frames = [
        HubFrame::Welcome {
            id: "c1",
            client_name: "Client-1",
            groups: None,
        },
        HubFrame::Message {
            id: "m1",
            scope: Scope::Direct,
            group: None,
            message: &message,
        },
        HubFrame::Groups { groups: &[] },
        HubFrame::Pong,
        HubFrame::Error {
            code: ErrorCode::InvalidJson,
            detail: "",
        },
        HubFrame::Bye {
            reason: ByeReason::Kicked,
        },
    ];
    for frame in &frames {
        match frame {
            HubFrame::Welcome { .. }
            | HubFrame::Message { .. }
            | HubFrame::Groups { .. }
            | HubFrame::Pong
            | HubFrame::Error { .. }
            | HubFrame::Bye { .. } => {}
        }
    }
    frames
        .iter()
        .map(|frame| wire(&serde_json::to_value(frame).unwrap()["type"]))
        .collect()
}

fn every_problem_code() -> Vec<String> {
    use ApiError::*;
    let text = String::new;
    let all = [
        ClientNotFound(text()),
        ClientBacklogged(text()),
        MessageTooLarge(1),
        InvalidBody(text()),
        UnsupportedMediaType,
        InvalidQuery(text()),
        InvalidPath(text()),
        InvalidHeader(text()),
        InvalidGroups(text()),
        TooManyRecipients(text()),
        ItemTooLarge(0, 1),
        BodyTooLarge(1),
        AckTimeout(text()),
        Unauthorized,
        Draining,
        TooManyStreams(1),
        NotFound,
        MethodNotAllowed,
        MailboxFull(text()),
        ClusterUnavailable(text()),
        NodeUnreachable(text()),
        Internal,
    ];
    for error in &all {
        match error {
            ClientNotFound(_)
            | ClientBacklogged(_)
            | MessageTooLarge(_)
            | InvalidBody(_)
            | UnsupportedMediaType
            | InvalidQuery(_)
            | InvalidPath(_)
            | InvalidHeader(_)
            | InvalidGroups(_)
            | TooManyRecipients(_)
            | ItemTooLarge(..)
            | BodyTooLarge(_)
            | AckTimeout(_)
            | Unauthorized
            | Draining
            | TooManyStreams(_)
            | NotFound
            | MethodNotAllowed
            | MailboxFull(_)
            | ClusterUnavailable(_)
            | NodeUnreachable(_)
            | Internal => {}
        }
    }
    all.iter()
        .map(|error| error.problem().code.as_str().to_owned())
        .collect()
}

#[test]
fn protocol_md_names_every_frame_code_and_reason() {
    let doc = read("docs/PROTOCOL.md");
    let frame = |kind: &str| format!("{{\"type\":\"{kind}\"");
    let mut gaps = Vec::new();
    gaps.extend(missing(&doc, &every_client_frame_type(), frame));
    gaps.extend(missing(&doc, &every_hub_frame_type(), frame));
    gaps.extend(missing(&doc, &every_error_code(), backticked));
    gaps.extend(missing(&doc, &every_bye_reason(), backticked));
    gaps.extend(missing(&doc, &every_scope(), |s| format!("\"{s}\"")));
    gaps.extend(missing(&doc, &every_problem_code(), backticked));
    let events: Vec<String> = EventKind::TYPES.iter().map(|t| t.to_string()).collect();
    gaps.extend(missing(&doc, &events, backticked));
    assert_eq!(gaps, Vec::<String>::new(), "missing from docs/PROTOCOL.md");
}

#[test]
fn protocol_md_names_every_route_of_the_openapi_document() {
    let doc = read("docs/PROTOCOL.md");
    let openapi: Value = serde_json::from_str(&read("openapi/openapi.json")).unwrap();
    let mut routes = Vec::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            routes.push(format!("`{} {path}", method.to_uppercase()));
        }
    }
    assert!(routes.len() >= 10, "{routes:?}");
    let gaps = missing(&doc, &routes, str::to_owned);
    assert_eq!(gaps, Vec::<String>::new(), "missing from docs/PROTOCOL.md");
}

/// The first cell of every table row in `doc`.
fn first_cells(doc: &str) -> impl Iterator<Item = &str> {
    doc.lines()
        .filter_map(|line| line.strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .map(str::trim)
}

#[test]
fn readme_and_deploy_list_every_flag() {
    let readme = read("README.md");
    let deploy = read("docs/DEPLOY.md");
    let command = Cli::command();
    let mut gaps = Vec::new();
    for arg in command.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let env = env.to_string_lossy();
        if !first_cells(&readme).any(|cell| cell.contains(&format!("`--{long}`"))) {
            gaps.push(format!("README.md: --{long}"));
        }
        if !first_cells(&deploy).any(|cell| cell == format!("`{env}`")) {
            gaps.push(format!("docs/DEPLOY.md: {env}"));
        }
    }
    assert_eq!(gaps, Vec::<String>::new());
}
