//! How answers look on a terminal: the client table, one line per send,
//! broadcast and event; and the server-sent events framing of `/events`.

use std::fmt::Display;
use std::io::Write;

use anyhow::Context;
use serde_json::Value;

/// Writes `text` and a newline to stdout at once (a reader following the
/// output sees each line when it happens); fails once stdout is closed.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// `GET /clients` as a table, with a count line under it.
pub fn clients_table(body: &Value) -> String {
    let clients = body["clients"].as_array().map_or(&[][..], Vec::as_slice);
    let mut rows = vec![["NAME", "ID", "PEER", "CONNECTED", "QUEUE", "DROPPED"].map(String::from)];
    for client in clients {
        rows.push([
            client["name"].as_str().unwrap_or("-").to_owned(),
            text(&client["id"]),
            text(&client["peer"]),
            text(&client["connectedAt"]),
            text(&client["queueLen"]),
            text(&client["dropped"]),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    let total = body["total"].as_u64().unwrap_or(0);
    table.push_str(&format!("{} of {total} clients", clients.len()));
    table
}

/// The answer to a send: queued, or acknowledged with `--wait-ack`.
pub fn sent(name: &str, body: &Value) -> String {
    let id = text(&body["id"]);
    if body["acked"] == Value::Bool(true) {
        format!("{id} acked by {name}")
    } else if body["stored"] == Value::Bool(true) {
        format!("{id} stored for {name}")
    } else {
        format!("{id} queued for {name}")
    }
}

/// The answer to a broadcast.
pub fn broadcast(body: &Value) -> String {
    format!(
        "{} queued for {} of {} clients ({} dropped)",
        text(&body["id"]),
        text(&body["queued"]),
        text(&body["recipients"]),
        text(&body["dropped"]),
    )
}

/// One event: time, type, who, then its own fields as `key=value`.
pub fn event_line(event: &Value) -> String {
    const ENVELOPE: [&str; 6] = ["id", "time", "type", "name", "clientId", "peer"];
    let mut parts = Vec::new();
    if let Some(time) = event["time"].as_str() {
        parts.push(time.to_owned());
    }
    parts.push(text(&event["type"]));
    match (event["name"].as_str(), event["clientId"].as_str()) {
        (Some(name), Some(id)) => parts.push(format!("{name} ({id})")),
        (None, Some(id)) => parts.push(format!("({id})")),
        _ => {}
    }
    if let Some(peer) = event["peer"].as_str() {
        parts.push(peer.to_owned());
    }
    if let Some(fields) = event.as_object() {
        for (key, value) in fields {
            if !ENVELOPE.contains(&key.as_str()) {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    parts.join(" ")
}

/// A page of `key` (groups, mailboxes) one `row` per line, then `N of TOTAL NOUNs`.
pub fn listing(body: &Value, key: &str, noun: &str, row: impl Fn(&Value) -> String) -> String {
    let items = body[key].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut lines: Vec<String> = items.iter().map(row).collect();
    let total = text(&body["total"]);
    let plural = if total == "1" { "" } else { "s" };
    lines.push(format!("{} of {total} {noun}{plural}", items.len()));
    lines.join("\n")
}

/// A JSON value as text, strings without their quotes.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Splits a server-sent event stream, however it arrives in chunks, into the
/// `data` of each event.
#[derive(Debug, Default)]
pub struct SseLines {
    pending: Vec<u8>,
    data: Option<String>,
}

impl SseLines {
    /// Takes the next chunk; returns the data of every event it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut complete = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                complete.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b": following\n\nid: 1\nevent: client.connected\ndata: {\"id\":1}\n\nid: 2\r\ndata: {\"id\":2}\r\n\r\n";
        for split in 0..stream.len() {
            let mut lines = SseLines::default();
            let mut got = lines.push(&stream[..split]);
            got.extend(lines.push(&stream[split..]));
            assert_eq!(got, ["{\"id\":1}", "{\"id\":2}"], "split at {split}");
        }
    }

    #[test]
    fn the_client_table_aligns_columns_and_counts() {
        let body = json!({"total": 3, "clients": [
            {"id": "c1", "name": "Client-1", "peer": "127.0.0.1:5", "connectedAt": "T1", "queueLen": 0, "dropped": 2},
            {"id": "c22", "name": null, "peer": "127.0.0.1:50312", "connectedAt": "T2", "queueLen": 10, "dropped": 0},
        ]});
        let want = "\
NAME      ID   PEER             CONNECTED  QUEUE  DROPPED
Client-1  c1   127.0.0.1:5      T1         0      2
-         c22  127.0.0.1:50312  T2         10     0
2 of 3 clients";
        assert_eq!(clients_table(&body), want);
    }

    #[test]
    fn an_event_line_names_who_and_what() {
        let event = json!({"id": 2, "time": "T", "clientId": "c1", "name": "Client-1",
            "peer": "127.0.0.1:5", "type": "client.named", "oldName": null});
        assert_eq!(
            event_line(&event),
            "T client.named Client-1 (c1) 127.0.0.1:5 oldName=null"
        );
        let missed = json!({"type": "events.missed", "missed": 12});
        assert_eq!(event_line(&missed), "events.missed missed=12");
    }
}
