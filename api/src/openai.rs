//! OpenAI request fields whose meaning the gateway and the engine share.

use serde::Deserialize;
use serde_json::Value;

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage of the whole request.
    #[serde(default)]
    pub include_usage: bool,
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSchemaSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `response_format`: the gateway validates answers against it, the engine
/// constrains decoding with it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_the_openai_shapes() {
        let f: ResponseFormat = serde_json::from_value(json!({
            "type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": true}
        }))
        .unwrap();
        let ResponseFormat::JsonSchema { json_schema } = f else {
            panic!("{f:?}")
        };
        assert_eq!(json_schema.schema, Some(json!({"type": "object"})));
        assert_eq!(json_schema.strict, Some(true));
        assert_eq!(
            serde_json::from_value::<ResponseFormat>(json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        );
        assert!(serde_json::from_value::<ResponseFormat>(json!({"type": "yaml"})).is_err());
        assert_eq!(
            serde_json::from_value::<Stop>(json!("\n")).unwrap(),
            Stop::One("\n".into())
        );
        assert_eq!(
            serde_json::from_value::<Stop>(json!(["a", "b"])).unwrap(),
            Stop::Many(vec!["a".into(), "b".into()])
        );
        assert!(serde_json::from_value::<Stop>(json!(3)).is_err());
        assert!(
            !serde_json::from_value::<StreamOptions>(json!({}))
                .unwrap()
                .include_usage
        );
        assert!(
            serde_json::from_value::<StreamOptions>(json!({"include_usage": true}))
                .unwrap()
                .include_usage
        );
    }
}
