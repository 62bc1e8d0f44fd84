//! How the process's open-files limit is shared out: a fixed overhead for the
//! listeners, the runtime, logging and webhooks, a reserve for HTTP
//! connections, and the rest for TCP clients (one descriptor each).
//!
//! Without this split, clients could take every descriptor and leave none for
//! `/healthz`, sends and kicks; past the client limit a new client is refused
//! with `bye` `server_full` while the HTTP API keeps its share.

use crate::config::Config;

/// Descriptors kept for the listeners, the runtime, logs, webhook connections
/// and the accept loop's spare.
pub const OVERHEAD: u64 = 32;

/// The share of the open-files limit each side may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft open-files limit (`u64::MAX` when unlimited).
    pub open_files: u64,
    /// Descriptors left for HTTP connections.
    pub http_reserve: u64,
    /// Most live TCP clients at once: `--max-clients`, or less if the limit
    /// cannot hold that many.
    pub clients: usize,
}

impl FdBudget {
    /// Shares `open_files` between the overhead, up to `max_http` HTTP
    /// connections and up to `max_clients` clients. A limit too small for the
    /// whole HTTP reserve gives HTTP at most half of what the overhead leaves.
    pub fn new(open_files: u64, max_clients: usize, max_http: usize) -> FdBudget {
        let usable = open_files.saturating_sub(OVERHEAD);
        let http_reserve = to_u64(max_http).min(usable / 2);
        let for_clients = usable - http_reserve;
        FdBudget {
            open_files,
            http_reserve,
            clients: max_clients.min(usize::try_from(for_clients).unwrap_or(usize::MAX)),
        }
    }

    /// The budget for `config` under the process's current soft limit (no cap
    /// beyond `--max-clients` where the limit cannot be read).
    pub fn current(config: &Config) -> FdBudget {
        let open_files = soft_open_files_limit().unwrap_or(u64::MAX);
        FdBudget::new(open_files, config.max_clients, config.max_http_connections)
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(unix)]
fn soft_open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

#[cfg(not(unix))]
fn soft_open_files_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_get_what_the_overhead_and_the_http_reserve_leave() {
        let budget = FdBudget::new(20_000, 100_000, 1000);
        assert_eq!(
            budget,
            FdBudget {
                open_files: 20_000,
                http_reserve: 1000,
                clients: 20_000 - 32 - 1000,
            }
        );
    }

    #[test]
    fn max_clients_applies_when_it_is_lower() {
        assert_eq!(FdBudget::new(20_000, 500, 1000).clients, 500);
    }

    #[test]
    fn a_small_limit_splits_what_is_left_in_half_at_most() {
        let budget = FdBudget::new(1024, 100_000, 1000);
        assert_eq!(budget.http_reserve, (1024 - 32) / 2);
        assert_eq!(budget.clients, (1024 - 32) / 2);
        let budget = FdBudget::new(256, 100_000, 16);
        assert_eq!((budget.http_reserve, budget.clients), (16, 208));
    }

    #[test]
    fn a_limit_below_the_overhead_admits_no_client() {
        let budget = FdBudget::new(20, 100, 1000);
        assert_eq!((budget.http_reserve, budget.clients), (0, 0));
    }

    #[test]
    fn no_limit_leaves_max_clients() {
        let budget = FdBudget::new(u64::MAX, 100_000, 1000);
        assert_eq!((budget.http_reserve, budget.clients), (1000, 100_000));
    }
}
