//! Prometheus metrics of one hub, through prometheus-client.
//!
//! Each hub owns its metric registry (no process globals), so several hubs can
//! run in one test process. Hot paths add to plain atomic counters, once per
//! write or per broadcast rather than once per byte.

use axum::extract::MatchedPath;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern, e.g. `/clients/{name}/send`.
    pub route: RouteLabel,
    /// The request method (`other` for any outside the standard set).
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// The route pattern a request matched, shared with the router rather than
/// copied; `unmatched` when no route did.
#[derive(Clone, Debug, Default)]
pub struct RouteLabel(Option<MatchedPath>);

impl RouteLabel {
    /// The label for a request that matched `route`, if any.
    pub fn new(route: Option<MatchedPath>) -> RouteLabel {
        RouteLabel(route)
    }

    /// The pattern, or `unmatched`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &RouteLabel) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl std::hash::Hash for RouteLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels naming why a connection ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A `bye` reason, `closed` or `error`.
    pub reason: &'static str,
}

/// Labels naming how a message was addressed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `direct` or `broadcast`.
    pub scope: &'static str,
}

/// Labels naming what became of one recipient of a bulk send.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `queued`, `not_found` or `backlogged`.
    pub status: &'static str,
}

/// Labels naming how something ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome, e.g. `delivered` or `timeout`.
    pub outcome: &'static str,
}

/// Every metric the hub exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Live TCP clients.
    pub clients_connected: Gauge,
    /// Live TCP clients with a name.
    pub clients_named: Gauge,
    /// Most live TCP clients the hub admits (`--max-clients` within the open-files limit).
    pub clients_limit: Gauge,
    /// Failed accepts on the TCP listener (such as running out of descriptors).
    pub accept_errors: Counter,
    /// Connections accepted since start.
    pub connections: Counter,
    /// Connections ended, by reason.
    pub disconnections: Family<ReasonLabels, Counter>,
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Bytes received from clients.
    pub bytes_in: Counter,
    /// Frames written to clients.
    pub frames_out: Counter,
    /// Bytes written to clients.
    pub bytes_out: Counter,
    /// Pushed messages accepted into client queues, by scope.
    pub messages_queued: Family<ScopeLabels, Counter>,
    /// Pushed messages dropped because a queue was full.
    pub messages_dropped: Counter,
    /// Recipients per broadcast.
    pub broadcast_fanout: Histogram,
    /// Sends to a group.
    pub group_sends: Counter,
    /// Recipients per group send.
    pub group_fanout: Histogram,
    /// Recipients of bulk sends, by status.
    pub bulk_recipients: Family<StatusLabels, Counter>,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency in seconds, by route, method and status.
    pub http_latency: Family<HttpLabels, Histogram>,
    /// Events that `/events` followers fell too far behind to receive.
    pub events_missed: Counter,
    /// Webhook batches by outcome: `delivered` or `failed` (after the last attempt).
    pub webhook_batches: Family<OutcomeLabels, Counter>,
    /// Webhook delivery attempts that are retried.
    pub webhook_retries: Counter,
    /// Events a webhook fell too far behind to send.
    pub webhook_events_dropped: Counter,
    /// Acks from clients for messages the hub sent.
    pub acks: Counter,
    /// Acks for message ids the hub never issued (ignored).
    pub acks_unknown: Counter,
    /// Sends that waited for an ack, by outcome: `acked`, `timeout`, `disconnected`.
    pub ack_waits: Family<OutcomeLabels, Counter>,
    /// Times a client was read no further until its rate allowed.
    pub inbound_throttled: Counter,
    /// Bytes held in unfinished inbound frames, all clients together.
    pub inbound_pending_bytes: Gauge,
    /// Clients closed because their unfinished frame would pass the pending cap.
    pub inbound_pending_refused: Counter,
    /// Messages stored in a mailbox.
    pub mailbox_stored: Counter,
    /// Stored messages delivered to a client (each delivery of one kept until acked counts).
    pub mailbox_delivered: Counter,
    /// Stored messages removed because their ttl ran out.
    pub mailbox_expired: Counter,
    /// Messages in the mailboxes now.
    pub mailbox_messages: Gauge,
    /// Bytes of the messages in the mailboxes now.
    pub mailbox_bytes: Gauge,
    /// In a cluster: 1 while the broker is reachable, else 0.
    pub cluster_broker_connected: Gauge,
    /// Calls to other nodes, by outcome.
    pub cluster_calls: Family<OutcomeLabels, Counter>,
    /// Call latency in seconds, by outcome.
    pub cluster_call_latency: Family<OutcomeLabels, Histogram>,
    /// Calls from other nodes this node refused, by reason.
    pub cluster_calls_refused: Family<ReasonLabels, Counter>,
    /// Sweeps of the names of vanished nodes.
    pub cluster_sweeps: Counter,
    /// Names released by sweeps.
    pub cluster_names_swept: Counter,
    /// Reconciliations with the cluster after the broker was out of reach.
    pub cluster_reconciliations: Counter,
    /// Sessions whose claim of a name is being written to the name table.
    pub cluster_claims_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("tcphub");
        let metrics = Metrics {
            clients_connected: Gauge::default(),
            clients_named: Gauge::default(),
            clients_limit: Gauge::default(),
            accept_errors: Counter::default(),
            connections: Counter::default(),
            disconnections: Family::default(),
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_out: Counter::default(),
            messages_queued: Family::default(),
            messages_dropped: Counter::default(),
            broadcast_fanout: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            group_sends: Counter::default(),
            group_fanout: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            bulk_recipients: Family::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            }),
            events_missed: Counter::default(),
            webhook_batches: Family::default(),
            webhook_retries: Counter::default(),
            webhook_events_dropped: Counter::default(),
            acks: Counter::default(),
            acks_unknown: Counter::default(),
            ack_waits: Family::default(),
            inbound_throttled: Counter::default(),
            inbound_pending_bytes: Gauge::default(),
            inbound_pending_refused: Counter::default(),
            mailbox_stored: Counter::default(),
            mailbox_delivered: Counter::default(),
            mailbox_expired: Counter::default(),
            mailbox_messages: Gauge::default(),
            mailbox_bytes: Gauge::default(),
            cluster_broker_connected: Gauge::default(),
            cluster_calls: Family::default(),
            cluster_call_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            }),
            cluster_calls_refused: Family::default(),
            cluster_sweeps: Counter::default(),
            cluster_names_swept: Counter::default(),
            cluster_reconciliations: Counter::default(),
            cluster_claims_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "clients_connected",
            "Live TCP clients",
            m.clients_connected.clone(),
        );
        registry.register(
            "clients_named",
            "Live TCP clients with a name",
            m.clients_named.clone(),
        );
        registry.register(
            "clients_limit",
            "Most live TCP clients admitted at once",
            m.clients_limit.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts on the TCP listener",
            m.accept_errors.clone(),
        );
        registry.register(
            "connections",
            "TCP connections accepted",
            m.connections.clone(),
        );
        registry.register(
            "disconnections",
            "TCP connections ended, by reason",
            m.disconnections.clone(),
        );
        registry.register(
            "frames_in",
            "Frames received from clients",
            m.frames_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames written to clients",
            m.frames_out.clone(),
        );
        registry.register("bytes_out", "Bytes written to clients", m.bytes_out.clone());
        registry.register(
            "messages_queued",
            "Pushed messages accepted, by scope",
            m.messages_queued.clone(),
        );
        registry.register(
            "messages_dropped",
            "Pushed messages dropped on full queues",
            m.messages_dropped.clone(),
        );
        registry.register(
            "broadcast_fanout",
            "Recipients per broadcast",
            m.broadcast_fanout.clone(),
        );
        registry.register("group_sends", "Sends to a group", m.group_sends.clone());
        registry.register(
            "group_fanout",
            "Recipients per group send",
            m.group_fanout.clone(),
        );
        registry.register(
            "bulk_recipients",
            "Recipients of bulk sends, by status (queued, not_found, backlogged)",
            m.bulk_recipients.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds, by route, method and status",
            m.http_latency.clone(),
        );
        registry.register(
            "events_missed",
            "Events /events followers fell too far behind to receive",
            m.events_missed.clone(),
        );
        registry.register(
            "webhook_batches",
            "Webhook batches by outcome (delivered, failed)",
            m.webhook_batches.clone(),
        );
        registry.register(
            "webhook_retries",
            "Webhook delivery attempts retried",
            m.webhook_retries.clone(),
        );
        registry.register(
            "webhook_events_dropped",
            "Events webhooks fell too far behind to send",
            m.webhook_events_dropped.clone(),
        );
        registry.register("acks", "Acks of pushed messages", m.acks.clone());
        registry.register(
            "acks_unknown",
            "Acks for message ids the hub never issued",
            m.acks_unknown.clone(),
        );
        registry.register(
            "ack_waits",
            "Sends that waited for an ack, by outcome",
            m.ack_waits.clone(),
        );
        registry.register(
            "inbound_throttled",
            "Times a TCP client was read no further until its rate allowed",
            m.inbound_throttled.clone(),
        );
        registry.register(
            "inbound_pending_bytes",
            "Bytes held in unfinished inbound frames",
            m.inbound_pending_bytes.clone(),
        );
        registry.register(
            "inbound_pending_refused",
            "TCP clients closed because their unfinished frame would pass --max-pending-bytes",
            m.inbound_pending_refused.clone(),
        );
        registry.register(
            "mailbox_stored",
            "Messages stored in a mailbox",
            m.mailbox_stored.clone(),
        );
        registry.register(
            "mailbox_delivered",
            "Stored messages delivered to a client",
            m.mailbox_delivered.clone(),
        );
        registry.register(
            "mailbox_expired",
            "Stored messages removed when their ttl ran out",
            m.mailbox_expired.clone(),
        );
        registry.register(
            "mailbox_messages",
            "Messages in the mailboxes",
            m.mailbox_messages.clone(),
        );
        registry.register(
            "mailbox_bytes",
            "Bytes of the messages in the mailboxes",
            m.mailbox_bytes.clone(),
        );
        registry.register(
            "cluster_broker_connected",
            "In cluster mode, 1 while the NATS broker is reachable",
            m.cluster_broker_connected.clone(),
        );
        registry.register(
            "cluster_calls",
            "Calls to other nodes, by outcome",
            m.cluster_calls.clone(),
        );
        registry.register(
            "cluster_call_seconds",
            "Latency of calls to other nodes in seconds, by outcome",
            m.cluster_call_latency.clone(),
        );
        registry.register(
            "cluster_calls_refused",
            "Calls from other nodes refused, by reason",
            m.cluster_calls_refused.clone(),
        );
        registry.register(
            "cluster_sweeps",
            "Sweeps of the names that vanished nodes held",
            m.cluster_sweeps.clone(),
        );
        registry.register(
            "cluster_names_swept",
            "Names released because their node vanished or no session of theirs holds them",
            m.cluster_names_swept.clone(),
        );
        registry.register(
            "cluster_reconciliations",
            "Reconciliations with the cluster after the broker was out of reach",
            m.cluster_reconciliations.clone(),
        );
        registry.register(
            "cluster_claims_in_flight",
            "In cluster mode, sessions whose claim of a name is being written to the name table",
            m.cluster_claims_in_flight.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts a call to another node and its latency.
    pub fn record_cluster_call(&self, outcome: &'static str, took: std::time::Duration) {
        let labels = OutcomeLabels { outcome };
        self.cluster_calls.get_or_create(&labels).inc();
        self.cluster_call_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The label names a help text promises: `…, by route, method and status`.
    fn promised(help: &str) -> BTreeSet<String> {
        let Some((_, after)) = help.split_once(" by ") else {
            return BTreeSet::new();
        };
        let after = after.split(" (").next().unwrap_or(after);
        after
            .trim_end_matches('.')
            .split([',', ' '])
            .filter(|word| !word.is_empty() && *word != "and")
            .map(str::to_owned)
            .collect()
    }

    /// The label names of one series line, without a histogram's `le`.
    fn labels_of(line: &str) -> BTreeSet<String> {
        let Some((_, rest)) = line.split_once('{') else {
            return BTreeSet::new();
        };
        rest.split("\",")
            .filter_map(|pair| pair.split_once('=').map(|(key, _)| key.trim().to_owned()))
            .filter(|key| key != "le" && !key.starts_with('}'))
            .collect()
    }

    #[test]
    fn help_texts_name_exactly_the_labels() {
        let metrics = Metrics::default();
        let http = HttpLabels {
            route: RouteLabel::default(),
            method: "GET",
            status: 200,
        };
        metrics.http_requests.get_or_create(&http).inc();
        metrics.http_latency.get_or_create(&http).observe(0.001);
        let reason = ReasonLabels { reason: "closed" };
        metrics.disconnections.get_or_create(&reason).inc();
        let scope = ScopeLabels { scope: "direct" };
        metrics.messages_queued.get_or_create(&scope).inc();
        let outcome = OutcomeLabels { outcome: "acked" };
        metrics.webhook_batches.get_or_create(&outcome).inc();
        metrics.ack_waits.get_or_create(&outcome).inc();

        let text = metrics.encode();
        assert!(
            text.contains("tcphub_messages_queued_total{scope=\"direct\"} 1"),
            "{text}"
        );
        let mut checked = 0;
        for help in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
            let (name, help) = help.split_once(' ').unwrap_or((help, ""));
            let want = promised(help);
            for series in text
                .lines()
                .filter_map(|l| l.strip_prefix(name))
                .map(|l| {
                    ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .fold(l, |l, s| l.strip_prefix(s).unwrap_or(l))
                })
                .filter(|l| l.starts_with(['{', ' ']))
            {
                assert_eq!(labels_of(series), want, "{name}: {help:?} vs {series}");
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} series checked");
    }
}
