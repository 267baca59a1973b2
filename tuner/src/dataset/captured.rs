//! An RFT dataset from captured traffic: the chat inferences of a route
//! (optionally one variant) in a time window, read from ClickHouse, joined
//! to their feedback, filtered (every filter's count is reported), PII
//! dropped or masked, deduplicated by prompt and split train / held-out.
//! Canary shadow mirrors (`shadow = 1`) are left out unless the query
//! includes them: a mirror repeats a prompt that was served, so it adds a
//! second answer to a prompt already in the data, not a new prompt.
//!
//! Each kept inference becomes an [`Item`]: the request's messages as the
//! prompt; `id` = `inference_id`; the request's `response_format`, `tools`,
//! `tool_choice` and `metadata` kept (graders and the eval send the first
//! three again; `metadata` is where a client puts what a grader may need,
//! e.g. a reference answer, as `{{item.metadata.x}}`); a labelled client's
//! metadata ([`labels_as_metadata`]) back as the item's `reference_answer`
//! and fields (text, or the JSON object or array it holds); the
//! logged answer as `logged_output`; feedback as `feedback: {metric: value}`
//! (inference-level feedback, then episode-level for metrics the inference
//! lacks; the latest value wins); and a demonstration, when there is one,
//! as the `reference_answer`.

use std::collections::HashMap;

use flywheel_feedback::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{
    dedupe,
    pii::{Hits, PiiAction, PiiFilter},
    split_of, Split,
};
use crate::item::{Item, Message, Sample};

/// What to select and how to filter it.
#[derive(Debug, Clone)]
pub struct Query {
    pub route: String,
    pub variant: Option<String>,
    /// Inclusive start, exclusive end, in ms since the epoch.
    pub from_ms: u64,
    pub to_ms: u64,
    /// Keep requests whose answers failed `response_format` validation on
    /// every attempt: their prompts are where the model needs training most.
    pub keep_validation_failures: bool,
    /// Keep the canary's shadow mirrors (module docs).
    pub include_shadow: bool,
    pub pii: PiiAction,
    pub seed: u64,
    pub heldout_fraction: f64,
    /// At most this many rows are read (newest first).
    pub limit: u64,
}

/// Why rows were left out, and how many of each.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub selected: usize,
    /// Canary shadow mirrors, unless the query includes them.
    pub dropped_shadow: usize,
    /// Non-2xx answers that were not validation failures: the client's own
    /// errors (4xx) and anything else the gateway could not serve.
    pub dropped_errors: usize,
    /// 5xx after every attempt failed on upstream errors (no answer to learn from).
    pub dropped_provider_outages: usize,
    pub dropped_validation_failures: usize,
    /// Answers whose tool call names no function or has arguments that are not JSON.
    pub dropped_failed_tool_calls: usize,
    /// Bodies not captured (`capture.bodies = "skip"`/`"redact"`) or unreadable.
    pub dropped_no_body: usize,
    pub dropped_pii: usize,
    pub masked_pii: usize,
    pub pii_hits: Hits,
    pub dropped_duplicates: usize,
    pub train: usize,
    pub heldout: usize,
}

pub struct Built {
    pub train: Vec<Item>,
    pub heldout: Vec<Item>,
    pub counts: Counts,
}

impl Built {
    /// The inferences kept (train and held-out): what `training_usage`
    /// records, so retention keeps them.
    pub fn inference_ids(&self) -> Vec<String> {
        self.train
            .iter()
            .chain(&self.heldout)
            .filter_map(|i| i.get_str("inference_id"))
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct Row {
    pub id: String,
    pub ts_ms: u64,
    pub variant: String,
    pub episode_id: Option<String>,
    pub status: u16,
    /// Enum8: 1 not requested, 2 passed, 3 failed (migration 0001).
    pub validation: i8,
    pub request_body: String,
    pub response_body: String,
    /// Whether any attempt failed on the upstream (connect error, timeout,
    /// 5xx, open circuit): tells an outage from a validation failure.
    pub upstream_failures: u64,
    pub tenant: String,
    /// A canary mirror of a served request (migration 0006).
    pub shadow: bool,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct FeedbackRow {
    tenant: String,
    inference_id: Option<String>,
    episode_id: Option<String>,
    metric: String,
    /// Enum8: 1 boolean, 2 float, 3 comment, 4 demonstration.
    value_kind: i8,
    value_float: f64,
    value_text: String,
}

const VALIDATION_FAILED: i8 = 3;

/// Reads the rows of `q` from the live and retained tables (deduplicated
/// by id: a row can be in both while retention copies it).
pub async fn fetch_rows(store: &Store, q: &Query) -> Result<Vec<Row>, clickhouse::error::Error> {
    let db = store.database();
    let select = |table: &str, attempts: &str| {
        format!(
            "SELECT i.id AS id, i.ts_ms AS ts_ms, i.variant AS variant, i.episode_id AS episode_id, i.status AS status, \
             toInt8(i.validation) AS validation, i.request_body AS request_body, i.response_body AS response_body, \
             a.upstream_failures AS upstream_failures, i.tenant AS tenant, i.shadow AS shadow \
             FROM {db}.{table} AS i FINAL \
             ANY LEFT JOIN (SELECT inference_id AS id, \
                 toUInt64(countIf(outcome IN ('error_status', 'connect_error', 'timeout', 'circuit_open', 'bad_response', 'mid_stream_failover'))) AS upstream_failures \
                 FROM {db}.{attempts} GROUP BY inference_id) AS a USING id \
             WHERE i.route = ? AND (? = '' OR i.variant = ?) AND i.ts_ms >= ? AND i.ts_ms < ? AND i.endpoint = 'chat'"
        )
    };
    let sql = format!(
        "SELECT * FROM ({} UNION ALL {}) ORDER BY ts_ms DESC, id DESC LIMIT 1 BY id LIMIT ?",
        select("inferences", "attempts"),
        select("inferences_retained", "attempts_retained")
    );
    // Newest first; within one millisecond by id, which is a UUIDv7 and so
    // in arrival order: reversed later, the first copy of a prompt comes first.
    let variant = q.variant.clone().unwrap_or_default();
    let mut query = store.client().query(&sql);
    for _ in 0..2 {
        query = query
            .bind(&q.route)
            .bind(&variant)
            .bind(&variant)
            .bind(q.from_ms)
            .bind(q.to_ms);
    }
    query.bind(q.limit).fetch_all::<Row>().await
}

/// `{inference_id: {metric: value}}` for `rows`, inference-level feedback
/// first, then episode-level for metrics not already set.
///
/// Feedback joins on (tenant, inference id) and (tenant, episode id), never
/// on an id alone: episode ids are the clients', so another tenant's
/// feedback on its own episode of the same id is not this row's.
async fn fetch_feedback(
    store: &Store,
    rows: &[Row],
) -> Result<HashMap<String, Map<String, Value>>, clickhouse::error::Error> {
    let db = store.database();
    // Keyed by (tenant, id).
    let mut by_inference: HashMap<(String, String), Map<String, Value>> = HashMap::new();
    let mut by_episode: HashMap<(String, String), Map<String, Value>> = HashMap::new();
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let episodes: Vec<&str> = {
        let mut e: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.episode_id.as_deref())
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    };
    for (column, keys) in [("inference_id", &ids), ("episode_id", &episodes)] {
        for chunk in keys.chunks(1000) {
            let sql = format!(
                "SELECT tenant, inference_id, episode_id, metric, toInt8(value_kind) AS value_kind, value_float, value_text \
                 FROM (SELECT * FROM {db}.feedback FINAL UNION ALL SELECT * FROM {db}.feedback_retained FINAL) \
                 WHERE {column} IN {}{} ORDER BY ts_ms, id",
                flywheel_feedback::store::placeholders(chunk.len()),
                // Episode-level feedback is feedback on no one inference:
                // an online grader's row names its inference and its
                // episode, and must not spread to the whole episode.
                if column == "episode_id" {
                    " AND isNull(inference_id)"
                } else {
                    ""
                }
            );
            let mut query = store.client().query(&sql);
            for k in chunk {
                query = query.bind(*k);
            }
            for f in query.fetch_all::<FeedbackRow>().await? {
                let value = match f.value_kind {
                    1 => json!(f.value_float != 0.0),
                    2 => json!(f.value_float),
                    4 => serde_json::from_str(&f.value_text).unwrap_or(Value::String(f.value_text)),
                    _ => Value::String(f.value_text),
                };
                let target = match (column, f.inference_id, f.episode_id) {
                    ("inference_id", Some(id), _) => by_inference.entry((f.tenant, id)),
                    (_, _, Some(ep)) => by_episode.entry((f.tenant, ep)),
                    _ => continue,
                };
                target.or_default().insert(f.metric, value);
            }
        }
    }
    let mut out = HashMap::new();
    for r in rows {
        let mut merged = by_inference
            .remove(&(r.tenant.clone(), r.id.clone()))
            .unwrap_or_default();
        if let Some(ep) = r
            .episode_id
            .as_ref()
            .and_then(|e| by_episode.get(&(r.tenant.clone(), e.clone())))
        {
            for (k, v) in ep {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !merged.is_empty() {
            out.insert(r.id.clone(), merged);
        }
    }
    Ok(out)
}

/// Why a row is left out, before PII and dedupe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Error,
    ProviderOutage,
    ValidationFailure,
    FailedToolCall,
    NoBody,
}

/// The item of one row, or why it is dropped. Pure, so every filter is
/// tested without a database.
pub fn to_item(row: &Row, keep_validation_failures: bool) -> Result<Item, Drop> {
    let validation_failed = row.validation == VALIDATION_FAILED;
    if row.status != 200 {
        if validation_failed && row.upstream_failures == 0 {
            if !keep_validation_failures {
                return Err(Drop::ValidationFailure);
            }
        } else if row.status >= 500 {
            return Err(Drop::ProviderOutage);
        } else {
            return Err(Drop::Error);
        }
    }
    let (item, answer) = item_of(row)?;
    if answer
        .as_ref()
        .and_then(|a| a.pointer("/choices/0/message"))
        .is_some_and(has_broken_tool_call)
    {
        return Err(Drop::FailedToolCall);
    }
    Ok(item)
}

/// The item and the logged answer of a successful (status 200) row, as a
/// grader scores it online. Unlike [`to_item`] a broken tool call is kept:
/// it is what the model answered, and leaving it out would flatter the
/// variant that makes it. `NoBody` when the bodies were not captured.
pub fn graded_pair(row: &Row) -> Result<(Item, Sample), Drop> {
    let (item, answer) = item_of(row)?;
    let answer = answer.ok_or(Drop::NoBody)?;
    Ok((item, Sample::from_chat_answer(&answer)))
}

/// The item of a row and, for a 200, the logged answer (its message is
/// also kept in the item as `logged_output` / `logged_tool_calls`).
fn item_of(row: &Row) -> Result<(Item, Option<Value>), Drop> {
    let request: Value = serde_json::from_str(&row.request_body).map_err(|_| Drop::NoBody)?;
    let messages: Vec<Message> = request
        .get("messages")
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .filter(|m: &Vec<Message>| !m.is_empty())
        .ok_or(Drop::NoBody)?;
    let mut extra = Map::new();
    extra.insert("id".into(), Value::String(row.id.clone()));
    extra.insert("inference_id".into(), Value::String(row.id.clone()));
    extra.insert("variant".into(), Value::String(row.variant.clone()));
    for key in ["response_format", "tools", "tool_choice", "metadata"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            extra.insert(key.into(), v.clone());
        }
    }
    let mut logged = None;
    if row.status == 200 {
        let answer: Value = serde_json::from_str(&row.response_body).map_err(|_| Drop::NoBody)?;
        let message = answer.pointer("/choices/0/message").ok_or(Drop::NoBody)?;
        extra.insert(
            "logged_output".into(),
            message.get("content").cloned().unwrap_or(Value::Null),
        );
        if let Some(calls) = message.get("tool_calls") {
            extra.insert("logged_tool_calls".into(), calls.clone());
        }
        logged = Some(answer);
    }
    let mut reference_answer = None;
    if let Some(Value::Object(labels)) = request.get("metadata") {
        for (key, value) in labels {
            let Some(text) = value.as_str() else { continue };
            if key == REFERENCE_METADATA_KEY {
                reference_answer = Some(label_value(text));
            } else if !extra.contains_key(key) {
                extra.insert(key.clone(), label_value(text));
            }
        }
    }
    let item = Item {
        messages,
        reference_answer,
        extra,
    };
    Ok((item, logged))
}

/// The request `metadata` key where a client that knows the expected
/// answer (a labelled workload, the simulated users) puts it.
pub const REFERENCE_METADATA_KEY: &str = "reference_answer";

/// OpenAI's limit on `metadata`: 16 keys, values of at most 512 characters.
const METADATA_KEYS: usize = 16;
const METADATA_VALUE_CHARS: usize = 512;

/// What a labelled client sends so that its traffic can be graded: the
/// item's reference answer and its own fields that graders read
/// (`item.keyword`), as OpenAI `metadata` (strings; JSON text for other
/// values), within OpenAI's limits (longer values and keys beyond 16 are
/// left out). `None` when there is nothing to send.
pub fn labels_as_metadata(item: &Item) -> Option<Value> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let reference = item
        .reference_answer
        .as_ref()
        .map(|r| (REFERENCE_METADATA_KEY.to_owned(), text(r)));
    // Fields the request carries anyway, or that name the item.
    const SENT_OR_IDS: [&str; 6] = [
        "id",
        "response_format",
        "tools",
        "tool_choice",
        "metadata",
        "messages",
    ];
    let fields = item
        .extra
        .iter()
        .filter(|(k, _)| !SENT_OR_IDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), text(v)));
    let labels: Map<String, Value> = reference
        .into_iter()
        .chain(fields)
        .filter(|(_, v)| v.chars().count() <= METADATA_VALUE_CHARS)
        .take(METADATA_KEYS)
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    (!labels.is_empty()).then_some(Value::Object(labels))
}

/// A label sent as metadata text: JSON objects and arrays come back as
/// JSON (metadata values are strings), anything else stays text.
fn label_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// A tool call that names no function or whose arguments are not a JSON
/// object.
fn has_broken_tool_call(message: &Value) -> bool {
    let Some(Value::Array(calls)) = message.get("tool_calls") else {
        return false;
    };
    calls.iter().any(|c| {
        let name_ok = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let args_ok = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .is_some_and(|a| serde_json::from_str::<Value>(a).is_ok_and(|v| v.is_object()));
        !(name_ok && args_ok)
    })
}

/// Builds the dataset of `q`: select, join feedback, filter, PII, dedupe,
/// split. Does not record training usage (the caller does once the
/// dataset is written).
pub async fn build(
    store: &Store,
    q: &Query,
    pii: &PiiFilter,
) -> Result<Built, clickhouse::error::Error> {
    let rows = fetch_rows(store, q).await?;
    let mut feedback = fetch_feedback(store, &rows).await?;
    let mut counts = Counts {
        selected: rows.len(),
        ..Counts::default()
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.shadow && !q.include_shadow {
            counts.dropped_shadow += 1;
            continue;
        }
        let mut item = match to_item(row, q.keep_validation_failures) {
            Ok(item) => item,
            Err(drop) => {
                *match drop {
                    Drop::Error => &mut counts.dropped_errors,
                    Drop::ProviderOutage => &mut counts.dropped_provider_outages,
                    Drop::ValidationFailure => &mut counts.dropped_validation_failures,
                    Drop::FailedToolCall => &mut counts.dropped_failed_tool_calls,
                    Drop::NoBody => &mut counts.dropped_no_body,
                } += 1;
                continue;
            }
        };
        if let Some(fb) = feedback.remove(&row.id) {
            // A demonstration is what the answer should have been.
            if let Some(demo) = fb.iter().find_map(|(_, v)| demonstration_text(v)) {
                item.reference_answer = Some(Value::String(demo));
            }
            item.extra.insert("feedback".into(), Value::Object(fb));
        }
        let hits = pii.apply(&mut item, q.pii);
        if !hits.is_empty() {
            for (k, n) in hits {
                *counts.pii_hits.entry(k).or_default() += n;
            }
            match q.pii {
                PiiAction::Drop => {
                    counts.dropped_pii += 1;
                    continue;
                }
                PiiAction::Mask => counts.masked_pii += 1,
            }
        }
        items.push(item);
    }
    // Oldest first, so dedupe keeps the first time a prompt was seen and
    // the files read in time order.
    items.reverse();
    counts.dropped_duplicates = dedupe(&mut items);
    let (train, heldout): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| split_of(i, q.seed, q.heldout_fraction) == Split::Train);
    counts.train = train.len();
    counts.heldout = heldout.len();
    Ok(Built {
        train,
        heldout,
        counts,
    })
}

/// The text of a demonstration feedback value (`{"role": "assistant",
/// "content": "..."}` or a plain string).
fn demonstration_text(v: &Value) -> Option<String> {
    v.get("role")?;
    v.get("content").and_then(Value::as_str).map(str::to_owned)
}

impl Counts {
    /// The filter report, one line per count, for the console.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("selected                  {}", self.selected)];
        for (name, n) in [
            ("dropped: shadow mirrors", self.dropped_shadow),
            ("dropped: errors", self.dropped_errors),
            ("dropped: provider outages", self.dropped_provider_outages),
            (
                "dropped: validation fails",
                self.dropped_validation_failures,
            ),
            ("dropped: failed tool calls", self.dropped_failed_tool_calls),
            ("dropped: no captured body", self.dropped_no_body),
            ("dropped: PII", self.dropped_pii),
            ("masked: PII", self.masked_pii),
            ("dropped: duplicates", self.dropped_duplicates),
            ("train", self.train),
            ("heldout", self.heldout),
        ] {
            out.push(format!("{name:<26}{n}"));
        }
        if !self.pii_hits.is_empty() {
            out.push(format!("PII hits by detector      {:?}", self.pii_hits));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: u16, validation: i8, upstream_failures: u64, response: Value) -> Row {
        Row {
            id: "i1".into(),
            ts_ms: 1,
            variant: "base".into(),
            episode_id: None,
            status,
            validation,
            request_body: json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                 "response_format": {"type": "json_object"}})
            .to_string(),
            response_body: response.to_string(),
            upstream_failures,
            tenant: "acme".into(),
            shadow: false,
        }
    }

    fn answer(message: Value) -> Value {
        json!({"choices": [{"message": message}]})
    }

    #[test]
    fn each_filter_has_its_reason() {
        let ok = answer(json!({"role": "assistant", "content": "{}"}));
        let item = to_item(&row(200, 2, 0, ok.clone()), false).unwrap();
        assert_eq!(item.get_str("inference_id"), Some("i1"));
        assert_eq!(
            item.extra["response_format"],
            json!({"type": "json_object"})
        );
        assert_eq!(item.extra["logged_output"], json!("{}"));
        assert_eq!(
            to_item(&row(429, 1, 0, Value::Null), false).unwrap_err(),
            Drop::Error
        );
        assert_eq!(
            to_item(&row(502, 1, 3, Value::Null), false).unwrap_err(),
            Drop::ProviderOutage
        );
        assert_eq!(
            to_item(&row(502, 3, 0, Value::Null), false).unwrap_err(),
            Drop::ValidationFailure
        );
        // A validation failure mixed with upstream failures is an outage.
        assert_eq!(
            to_item(&row(502, 3, 1, Value::Null), true).unwrap_err(),
            Drop::ProviderOutage
        );
        let kept = to_item(&row(502, 3, 0, Value::Null), true).unwrap();
        assert!(kept.extra.get("logged_output").is_none());
        let bad_call = answer(json!({"role": "assistant", "content": null, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]}));
        assert_eq!(
            to_item(&row(200, 1, 0, bad_call), false).unwrap_err(),
            Drop::FailedToolCall
        );
        let good_call = answer(json!({"role": "assistant", "content": null, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}));
        assert!(to_item(&row(200, 1, 0, good_call), false)
            .unwrap()
            .extra
            .contains_key("logged_tool_calls"));
        let mut redacted = row(200, 1, 0, ok);
        redacted.request_body = String::new();
        assert_eq!(to_item(&redacted, false).unwrap_err(), Drop::NoBody);
    }

    #[test]
    fn a_reference_sent_as_metadata_becomes_the_items_reference_answer() {
        let ok = answer(json!({"role": "assistant", "content": "{}"}));
        let mut r = row(200, 2, 0, ok);
        let with = |reference: &str| {
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "metadata": {"reference_answer": reference}})
            .to_string()
        };
        r.request_body = with(r#"{"age": 31}"#);
        assert_eq!(
            to_item(&r, false).unwrap().reference_answer,
            Some(json!({"age": 31}))
        );
        // Text that is not a JSON object or array stays text: "42" is not 42.
        r.request_body = with("42");
        assert_eq!(
            to_item(&r, false).unwrap().reference_answer,
            Some(json!("42"))
        );
        r.request_body = row(200, 2, 0, Value::Null).request_body;
        assert_eq!(to_item(&r, false).unwrap().reference_answer, None);
    }

    #[test]
    fn a_labelled_items_reference_and_fields_survive_the_trip_through_metadata() {
        let mut item = Item::new(
            vec![Message::new("user", "Use the word \"sunlight\".")],
            Some(json!({"lines": 3})),
        );
        item.extra.insert("keyword".into(), json!("sunlight"));
        item.extra.insert("id".into(), json!("instructions-1-1"));
        let metadata = labels_as_metadata(&item).unwrap();
        assert_eq!(
            metadata,
            json!({"reference_answer": "{\"lines\":3}", "keyword": "sunlight"})
        );
        let mut r = row(
            200,
            2,
            0,
            answer(json!({"role": "assistant", "content": "ok"})),
        );
        r.request_body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                "metadata": metadata})
        .to_string();
        let back = to_item(&r, false).unwrap();
        assert_eq!(back.reference_answer, Some(json!({"lines": 3})));
        assert_eq!(back.extra["keyword"], json!("sunlight"));
        // The captured row's own id wins over a label of the same name.
        assert_eq!(back.id(), "i1");
        assert_eq!(labels_as_metadata(&Item::new(vec![], None)), None);
    }

    #[test]
    fn graded_pair_keeps_metadata_and_broken_tool_calls() {
        let mut r = row(
            200,
            1,
            0,
            answer(json!({"role": "assistant", "content": "Paris"})),
        );
        r.request_body =
            json!({"model": "m", "messages": [{"role": "user", "content": "capital?"}],
                                "metadata": {"reference": "Paris"}})
            .to_string();
        let (item, sample) = graded_pair(&r).unwrap();
        assert_eq!(item.extra["metadata"], json!({"reference": "Paris"}));
        assert_eq!(item.id(), "i1");
        assert_eq!(sample.output_text, "Paris");
        // The dataset keeps metadata too.
        assert_eq!(
            to_item(&r, false).unwrap().extra["metadata"]["reference"],
            "Paris"
        );
        let broken = row(
            200,
            1,
            0,
            answer(json!({"role": "assistant", "content": null, "tool_calls": [
                {"type": "function", "function": {"name": "", "arguments": "{}"}}]})),
        );
        assert_eq!(to_item(&broken, false).unwrap_err(), Drop::FailedToolCall);
        let (_, sample) = graded_pair(&broken).unwrap();
        assert_eq!(sample.output_tools.len(), 1);
        let mut no_body = r.clone();
        no_body.response_body = String::new();
        assert_eq!(graded_pair(&no_body).unwrap_err(), Drop::NoBody);
        let mut no_request = r;
        no_request.request_body = String::new();
        assert_eq!(graded_pair(&no_request).unwrap_err(), Drop::NoBody);
    }
}
