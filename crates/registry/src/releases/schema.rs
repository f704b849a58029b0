//! JSON Schemas for documents: the document `NAME.schema` (JSON) of a namespace and service
//! holds the schema every release of `NAME` beside it must meet. A schema is a document like any
//! other (released, versioned, rolled back); publishing one checks that it compiles, and every
//! publish of its document is checked against its latest release.
//!
//! The `jsonschema` crate runs without remote or file `$ref` resolution, so a schema can never
//! make the registry fetch anything; a document in YAML, TOML or properties is checked as the JSON
//! value it reads as.

use rollcall_wire::ConfigFormat;

/// The suffix that makes a document the schema of the one named without it.
pub const SUFFIX: &str = ".schema";

/// Checks that `text` is a JSON Schema that compiles (every `$ref` local).
pub fn check(text: &str) -> Result<(), String> {
    let schema: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::validator_for(&schema).map(drop).map_err(|e| e.to_string())
}

/// Checks `content`, a document in `format`, against the schema `schema`; the first violation
/// says where (its JSON pointer) and what.
pub fn validate(schema: &str, format: ConfigFormat, content: &str) -> Result<(), String> {
    let schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| format!("the schema does not compile: {e}"))?;
    let value = as_json(format, content)?;
    match validator.iter_errors(&value).next() {
        None => Ok(()),
        Some(error) => {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            Err(format!("at {at}: {error}"))
        }
    }
}

/// `content` as the JSON value it reads as.
fn as_json(format: ConfigFormat, content: &str) -> Result<serde_json::Value, String> {
    match format {
        ConfigFormat::Json => serde_json::from_str(content).map_err(|e| e.to_string()),
        ConfigFormat::Yaml => serde_saphyr::from_str(content).map_err(|e| e.to_string()),
        ConfigFormat::Toml => toml::from_str::<toml::Table>(content)
            .map_err(|e| e.to_string())
            .and_then(|table| serde_json::to_value(table).map_err(|e| e.to_string())),
        ConfigFormat::Properties => java_properties::read(content.as_bytes())
            .map(|map| {
                map.into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect()
            })
            .map_err(|e| e.to_string()),
        ConfigFormat::Text => Ok(serde_json::Value::String(content.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = r#"{"type": "object", "required": ["maxScore"],
        "properties": {"maxScore": {"type": "integer", "maximum": 100}}}"#;

    #[test]
    fn a_document_meets_its_schema_in_any_format_or_says_where_it_does_not() {
        assert_eq!(validate(LIMITS, ConfigFormat::Json, r#"{"maxScore": 90}"#), Ok(()));
        assert_eq!(validate(LIMITS, ConfigFormat::Yaml, "maxScore: 90\n"), Ok(()));
        assert_eq!(validate(LIMITS, ConfigFormat::Toml, "maxScore = 90\n"), Ok(()));
        let over = validate(LIMITS, ConfigFormat::Json, r#"{"maxScore": 120}"#).expect_err("over");
        assert!(over.starts_with("at /maxScore: "), "{over}");
        let missing = validate(LIMITS, ConfigFormat::Yaml, "other: 1\n").expect_err("missing");
        assert!(
            missing.starts_with("at /: ") && missing.contains("maxScore"),
            "{missing}"
        );
    }

    #[test]
    fn a_schema_must_compile_and_may_not_reach_out() {
        assert_eq!(check(LIMITS), Ok(()));
        assert!(check(r#"{"type": "nonsense"}"#).is_err());
        assert!(check("not json").is_err());
        assert!(
            check(r#"{"$ref": "http://127.0.0.1:9/schema.json"}"#).is_err(),
            "a remote $ref is not fetched"
        );
    }
}
