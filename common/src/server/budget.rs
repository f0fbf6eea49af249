//! A process's descriptor limit shared among its listeners, so that when one of them is
//! full (thousands of Envoy streams, or a client holding idle connections) the others
//! still have descriptors to accept with: the APIs and the console keep answering.

/// Descriptors kept for what is not a connection: files, the store, pipes to child
/// processes, the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// How many connections each listener of a process may hold: `per_api` for each of its
/// request/response listeners (at most [`super::MAX_CONNECTIONS`]), `bulk` for the one
/// that holds long-lived streams (ADS) — together under the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The cap of each API listener.
    pub per_api: usize,
    /// The cap of the streams listener.
    pub bulk: usize,
}

impl Budget {
    /// The budget of a process whose descriptor limit is `limit`, with `apis` API
    /// listeners: [`RESERVED_DESCRIPTORS`] (or half a small limit) kept aside, each API
    /// an eighth of the rest (at most [`super::MAX_CONNECTIONS`]), the streams what remains.
    pub fn of(limit: u64, apis: usize) -> Self {
        let reserve = RESERVED_DESCRIPTORS.min(limit / 2);
        let usable = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
        let per_api = (usable / 8).clamp(1, super::MAX_CONNECTIONS);
        let bulk = usable.saturating_sub(per_api.saturating_mul(apis)).max(1);
        Self { per_api, bulk }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listeners_together_stay_under_the_limit() {
        for limit in [16, 300, 1024, 65_536, 1_048_576] {
            for apis in [1, 2, 3] {
                let b = Budget::of(limit, apis);
                let used = (b.per_api * apis + b.bulk) as u64;
                assert!(used < limit, "{limit} {apis}: {b:?} uses {used}");
                assert!(b.per_api >= 1 && b.bulk >= 1, "{b:?}");
            }
        }
        // The usual cases: a default limit, and the limit raised to 65,536.
        assert_eq!(
            Budget::of(1024, 2),
            Budget {
                per_api: 96,
                bulk: 576
            }
        );
        assert_eq!(
            Budget::of(65_536, 2),
            Budget {
                per_api: 4096,
                bulk: 65_536 - 256 - 8192
            }
        );
    }
}
