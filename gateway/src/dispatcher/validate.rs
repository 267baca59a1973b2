//! Output validation for `response_format`: the answer must parse as JSON
//! (`json_object`) and, for `json_schema`, conform to the schema.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use flywheel_api::openai::ResponseFormat;
use serde_json::Value;

use crate::error::GatewayError;

pub enum Validator {
    JsonObject,
    JsonSchema(Box<jsonschema::Validator>),
}

impl Validator {
    /// The validator a request asks for, if any. A schema that does not
    /// compile is the client's error.
    pub fn for_format(format: Option<&ResponseFormat>) -> Result<Option<Self>, GatewayError> {
        match format {
            None | Some(ResponseFormat::Text) => Ok(None),
            Some(ResponseFormat::JsonObject) => Ok(Some(Self::JsonObject)),
            Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
                None => Ok(Some(Self::JsonObject)),
                Some(schema) => jsonschema::validator_for(schema).map(|v| Some(Self::JsonSchema(Box::new(v)))).map_err(
                    |e| {
                        GatewayError::invalid(
                            format!("response_format.json_schema.schema is not a valid JSON Schema: {e}"),
                            Some("response_format.json_schema.schema"),
                        )
                    },
                ),
            },
        }
    }

    /// `Err(reason)` when `content` is not an acceptable answer.
    pub fn check(&self, content: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(content.trim())
            .map_err(|e| format!("answer is not valid JSON: {e}"))?;
        match self {
            Self::JsonObject => {
                if value.is_object() {
                    Ok(())
                } else {
                    Err("answer is JSON but not an object".to_owned())
                }
            }
            Self::JsonSchema(v) => {
                let errors: Vec<String> = v
                    .iter_errors(&value)
                    .take(3)
                    .map(|e| e.to_string())
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "answer does not match the schema: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flywheel_api::openai::JsonSchemaSpec;
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_validation() {
        let format = ResponseFormat::JsonSchema {
            json_schema: JsonSchemaSpec {
                name: Some("p".into()),
                schema: Some(
                    json!({"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}),
                ),
                strict: None,
            },
        };
        let v = Validator::for_format(Some(&format)).unwrap().unwrap();
        assert!(v.check(r#"{"age": 3}"#).is_ok());
        assert!(v.check(r#"{"age": "x"}"#).unwrap_err().contains("schema"));
        assert!(v
            .check(r#"{"age": "#)
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn json_object_requires_object() {
        let v = Validator::JsonObject;
        assert!(v.check("[1]").is_err());
        assert!(v.check(" {\"a\": 1} ").is_ok());
    }
}
