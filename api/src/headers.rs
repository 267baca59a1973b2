//! The `x-flywheel-*` response headers of the gateway.

use serde::Serialize;

/// Request header: pins a conversation (episode) to one variant and names it in the events.
pub const EPISODE_ID: &str = "x-flywheel-episode-id";
/// The id of the request's inference event (for the feedback API).
pub const REQUEST_ID: &str = "x-flywheel-request-id";
/// The variant, provider and model that answered.
pub const VARIANT: &str = "x-flywheel-variant";
pub const PROVIDER: &str = "x-flywheel-provider";
pub const MODEL: &str = "x-flywheel-model";

pub const ATTEMPTS: &str = "x-flywheel-attempts";
pub const RETRIES: &str = "x-flywheel-retries";
pub const FALLBACK_DEPTH: &str = "x-flywheel-fallback-depth";
pub const PROMPT_TOKENS: &str = "x-flywheel-prompt-tokens";
pub const COMPLETION_TOKENS: &str = "x-flywheel-completion-tokens";
pub const COST_USD: &str = "x-flywheel-cost-usd";

/// What a request cost over all its attempts. The gateway sends it on unary
/// answers and errors (a stream's headers leave before its attempts are
/// done), so that an offline eval can price a fallback chain without
/// querying ClickHouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub attempts: u32,
    /// Index in the variant's fallback chain of the target that answered.
    pub fallback_depth: u32,
    /// Billed tokens: the sum over attempts, failed ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl Totals {
    pub fn retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }

    /// The header names and values that carry these totals.
    pub fn to_headers(&self) -> [(&'static str, String); 6] {
        [
            (ATTEMPTS, self.attempts.to_string()),
            (RETRIES, self.retries().to_string()),
            (FALLBACK_DEPTH, self.fallback_depth.to_string()),
            (PROMPT_TOKENS, self.prompt_tokens.to_string()),
            (COMPLETION_TOKENS, self.completion_tokens.to_string()),
            // Nanodollars: a 135M model's answer costs well under a cent.
            (COST_USD, format!("{:.9}", self.cost_usd)),
        ]
    }

    /// Reads the totals back from a response's headers (`get` looks one up
    /// by name); `None` when one is missing or malformed, as from a server
    /// that is not a Flywheel gateway.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        fn parse<'a, T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<&'a str>,
            name: &str,
        ) -> Option<T> {
            get(name)?.trim().parse().ok()
        }
        Some(Self {
            attempts: parse(&get, ATTEMPTS)?,
            fallback_depth: parse(&get, FALLBACK_DEPTH)?,
            prompt_tokens: parse(&get, PROMPT_TOKENS)?,
            completion_tokens: parse(&get, COMPLETION_TOKENS)?,
            cost_usd: parse(&get, COST_USD)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_round_trip_through_headers() {
        let t = Totals {
            attempts: 3,
            fallback_depth: 1,
            prompt_tokens: 120,
            completion_tokens: 7,
            cost_usd: 0.000_012_345,
        };
        let headers = t.to_headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(RETRIES), Some("2"));
        assert_eq!(Totals::from_headers(get), Some(t));
    }

    #[test]
    fn missing_or_malformed_headers_give_none() {
        let headers = Totals::default().to_headers();
        let without_cost = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name && name != COST_USD)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(Totals::from_headers(without_cost), None);
        let bad = |name: &str| {
            if name == ATTEMPTS {
                Some("three")
            } else {
                Some("1")
            }
        };
        assert_eq!(Totals::from_headers(bad), None);
    }
}
