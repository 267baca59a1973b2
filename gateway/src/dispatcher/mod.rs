//! Serving one client request on upstreams: attempts in the order of the
//! [`Plan`] until one answer is acceptable.
//!
//! The request path is: endpoint → [`Call`] → [`run_unary`] or
//! [`run_stream`] → the attempt loop (`attempts::run`, shared by both;
//! each only says how it reads an answer) → response. What happened (the
//! [`Ledger`](crate::metering::Ledger) of attempts and the
//! [`Outcome`](crate::metering::Outcome)) goes to
//! [`metering::record_request`](crate::metering::record_request), which
//! turns it into the request's one event.

mod attempts;
mod plan;
mod stream;
mod unary;
pub mod validate;

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use flywheel_api::openai::StreamOptions;
pub use plan::{Failure, Plan};
use serde_json::Value;
pub use stream::run as run_stream;
pub use unary::run as run_unary;
pub use validate::Validator;

use crate::{
    coordination::Reservation,
    middleware::Tenant,
    router::{Route, Target, UnknownVariant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Completion,
    Embedding,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completion => "/completions",
            Self::Embedding => "/embeddings",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
        }
    }
}

/// One client request, checked and routed, ready to dispatch.
pub struct Call {
    pub id: String,
    pub ts_ms: u64,
    pub start: Instant,
    pub tenant: String,
    /// The caller's key, when it has a token limit to count against.
    pub token_key: Option<Arc<str>>,
    /// That limit (`tokens_per_minute`; 0 = none).
    pub tokens_per_minute: u64,
    /// The tokens reserved against it before the first attempt, settled
    /// with what the request used when it ends.
    pub reservation: Option<Reservation>,
    pub op: Operation,
    pub route: Arc<Route>,
    pub variant: usize,
    /// The caller chose the variant (`x-flywheel-variant`) rather than the
    /// weights: such a request is an offline eval's, so no shadow mirror
    /// is taken of it.
    pub pinned: bool,
    /// The body as the client sent it; `model` is replaced per target.
    pub body: Value,
    pub stream: bool,
    pub include_usage: bool,
    /// Mid-stream continuation needs a single choice.
    pub can_continue: bool,
    pub validator: Option<Validator>,
    pub episode_id: Option<String>,
    pub user: Option<String>,
    /// A shadow mirror of another call ([`Call::mirror`]): metered, never
    /// answered to anyone, counted against no tenant limit.
    pub shadow: bool,
    /// The served call's id on both calls of a mirrored pair.
    pub pair_id: Option<String>,
}

impl Call {
    /// A call on the variant `pinned` names, when the caller pinned one
    /// (the endpoint checked that it may), else on the one the route picks
    /// by weight, sticky per episode id or `user`.
    pub fn new(
        op: Operation,
        tenant: Tenant,
        route: Arc<Route>,
        body: Value,
        episode_id: Option<String>,
        pinned: Option<&str>,
        start: Instant,
    ) -> Result<Self, UnknownVariant> {
        let user = body.get("user").and_then(Value::as_str).map(str::to_owned);
        let sticky = episode_id.as_deref().or(user.as_deref());
        let variant = route.choose(pinned, sticky)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(start.elapsed());
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            ts_ms: now.as_millis() as u64,
            start,
            tenant: tenant.name,
            token_key: (tenant.tokens_per_minute > 0).then_some(tenant.key_id),
            tokens_per_minute: tenant.tokens_per_minute,
            reservation: None,
            op,
            route,
            variant,
            pinned: pinned.is_some(),
            body,
            stream: false,
            include_usage: false,
            can_continue: true,
            validator: None,
            episode_id,
            user,
            shadow: false,
            pair_id: None,
        })
    }

    /// The shadow twin of this call on the route's variant `variant`: the
    /// same body, streaming and clock (so latency and TTFT compare), its own
    /// id, paired with this call (whose `pair_id` is set too). It counts
    /// against no token limit: the tenant is not billed for it.
    pub fn mirror(&mut self, variant: usize, validator: Option<Validator>) -> Call {
        self.pair_id = Some(self.id.clone());
        Call {
            id: uuid::Uuid::now_v7().to_string(),
            ts_ms: self.ts_ms,
            start: self.start,
            tenant: self.tenant.clone(),
            token_key: None,
            tokens_per_minute: 0,
            reservation: None,
            op: self.op,
            route: self.route.clone(),
            variant,
            pinned: false,
            body: self.body.clone(),
            stream: self.stream,
            include_usage: self.include_usage,
            can_continue: self.can_continue,
            validator,
            episode_id: self.episode_id.clone(),
            user: self.user.clone(),
            shadow: true,
            pair_id: Some(self.id.clone()),
        }
    }

    /// `stream` and `stream_options.include_usage` of the request.
    pub fn set_streaming(&mut self, stream: Option<bool>, options: Option<&StreamOptions>) {
        self.stream = stream.unwrap_or(false);
        self.include_usage = options.is_some_and(|o| o.include_usage);
    }

    pub fn variant_name(&self) -> &str {
        &self.route.variants[self.variant].name
    }

    pub fn targets(&self) -> &[Target] {
        &self.route.variants[self.variant].targets
    }

    pub fn deadline(&self) -> Instant {
        self.start + self.route.retry.total_timeout()
    }

    /// The upstream body for `target`: the client's body with the target's
    /// model. Streams always ask for usage so that metering has real counts.
    fn upstream_body(&self, target: &Target, continue_from: Option<&str>) -> Value {
        let mut body = self.body.clone();
        body["model"] = Value::String(target.model.clone());
        if !target.provider.forward_response_format {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("response_format");
            }
        }
        if self.stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        if let Some(prefix) = continue_from {
            match self.op {
                Operation::Chat => {
                    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
                        messages.push(serde_json::json!({"role": "assistant", "content": prefix}));
                    }
                }
                Operation::Completion => {
                    if let Some(Value::String(prompt)) = body.get_mut("prompt") {
                        prompt.push_str(prefix);
                    }
                }
                Operation::Embedding => {}
            }
        }
        body
    }
}

/// Calls on a route of real (never contacted) providers, for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::{sync::Arc, time::Instant};

    use serde_json::{json, Value};

    use super::{Call, Operation};
    use crate::{config::Config, metrics::Metrics, middleware::Tenant, router::Router, upstream};

    /// Route `r`: one variant whose fallback chain is provider `a` (model
    /// `ma`), then provider `b` (model `mb`). `extra` is more config TOML
    /// (`[retry]`, `[circuit_breaker]`, ...).
    pub fn call_with(op: Operation, body: Value, extra: &str) -> Call {
        let text = format!(
            r#"
            [auth]
            enabled = false
            [providers.a]
            base_url = "http://127.0.0.1:1/v1"
            [providers.b]
            base_url = "http://127.0.0.1:1/v1"
            continuation = "restart"
            [[routes]]
            name = "r"
            [[routes.variants]]
            name = "v"
            targets = [{{ provider = "a", model = "ma" }}, {{ provider = "b", model = "mb" }}]
            {extra}
            "#
        );
        let config = Config::parse(&text).unwrap();
        let providers = upstream::build_providers(&config, &Arc::new(Metrics::new())).unwrap();
        let route = Router::new(&config, &providers).unwrap().get("r").unwrap();
        let tenant = Tenant {
            name: "t".into(),
            key_id: Arc::from("k"),
            tokens_per_minute: 0,
            pin_variants: false,
        };
        Call::new(op, tenant, route, body, None, None, Instant::now()).unwrap()
    }

    /// A chat call with one user message and default settings.
    pub fn chat() -> Call {
        let body = json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]});
        call_with(Operation::Chat, body, "")
    }
}
