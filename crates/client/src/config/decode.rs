//! A configuration document's text, in its format, read into the service's own type.

use rollcall_wire::ConfigFormat;
use serde::de::DeserializeOwned;

/// Reads `text`, a document in `format`, as a `T`: JSON, YAML and TOML by their serde readers;
/// Java properties as a map of strings; text as one string. The error says why, for the
/// rejection the registry is told.
pub(crate) fn decode<T: DeserializeOwned>(format: ConfigFormat, text: &str) -> Result<T, String> {
    match format {
        ConfigFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
        ConfigFormat::Yaml => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
        ConfigFormat::Toml => toml::from_str(text).map_err(|e| e.to_string()),
        ConfigFormat::Properties => {
            let map = java_properties::read(text.as_bytes()).map_err(|e| e.to_string())?;
            let object = map
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())
        }
        ConfigFormat::Text => {
            serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Limits {
        max: u32,
        types: Vec<String>,
    }

    #[test]
    fn every_format_reads_into_the_same_type() {
        let expected = Limits {
            max: 100,
            types: vec!["Quiz".to_owned(), "Test".to_owned()],
        };
        let documents = [
            (ConfigFormat::Json, r#"{"max": 100, "types": ["Quiz", "Test"]}"#),
            (ConfigFormat::Yaml, "max: 100\ntypes:\n  - Quiz\n  - Test\n"),
            (ConfigFormat::Toml, "max = 100\ntypes = [\"Quiz\", \"Test\"]\n"),
        ];
        for (format, text) in documents {
            assert_eq!(decode::<Limits>(format, text).as_ref(), Ok(&expected), "{format:?}");
        }
        let properties: BTreeMap<String, String> = decode(ConfigFormat::Properties, "a=1\nb=two\n").expect("map");
        assert_eq!(properties.get("b").map(String::as_str), Some("two"));
        let text: String = decode(ConfigFormat::Text, "hello").expect("string");
        assert_eq!(text, "hello");
    }

    #[test]
    fn a_document_of_the_wrong_shape_says_why() {
        let error = decode::<Limits>(ConfigFormat::Json, r#"{"max": "lots", "types": []}"#).expect_err("wrong type");
        assert!(error.contains("max") || error.contains("invalid type"), "{error}");
    }
}
