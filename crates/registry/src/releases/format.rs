//! Well-formedness of a configuration document in its format, with where it first goes wrong:
//! the one check every publish passes before anything is stored.
//!
//! Each format is read by its field's parser (`serde_json`, saphyr's YAML 1.2 event parser, the
//! `toml` crate, `java-properties`); a document is never interpreted beyond that here.

use rollcall_wire::ConfigFormat;

/// Where and why a document is not well-formed; lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct Malformed {
    /// The line of the first error.
    pub line: usize,
    /// Its column, in characters.
    pub column: usize,
    /// The parser's words.
    pub message: String,
}

/// Checks that `text` is a well-formed document of `format`.
pub fn check(format: ConfigFormat, text: &str) -> Result<(), Malformed> {
    match format {
        ConfigFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(drop)
            .map_err(|e| Malformed {
                line: e.line(),
                column: e.column(),
                message: json_message(&e),
            }),
        ConfigFormat::Yaml => {
            for event in saphyr_parser::Parser::new_from_str(text) {
                if let Err(error) = event {
                    return Err(Malformed {
                        line: error.marker().line(),
                        column: error.marker().col() + 1,
                        message: error.info().to_owned(),
                    });
                }
            }
            Ok(())
        }
        ConfigFormat::Toml => toml::from_str::<toml::Table>(text).map(drop).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |span| position(text, span.start));
            Malformed {
                line,
                column,
                message: e.message().to_owned(),
            }
        }),
        ConfigFormat::Properties => java_properties::read(text.as_bytes()).map(drop).map_err(|e| Malformed {
            line: e.line_number().unwrap_or(1),
            column: 1,
            message: e.to_string(),
        }),
        ConfigFormat::Text => Ok(()),
    }
}

/// `serde_json`'s message without its own " at line L column C" (said separately).
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    // The parser's offsets fall on character boundaries; anything else counts the whole text.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(format: ConfigFormat, text: &str) -> (usize, usize) {
        let error = check(format, text).expect_err("malformed");
        (error.line, error.column)
    }

    #[test]
    fn well_formed_documents_of_every_format_pass() {
        let documents = [
            (
                ConfigFormat::Json,
                r#"{"gradeTypes": ["Quiz", "Test"], "maxScore": 100}"#,
            ),
            (ConfigFormat::Yaml, "gradeTypes:\n  - Quiz\n  - Test\nmaxScore: 100\n"),
            (ConfigFormat::Toml, "maxScore = 100\n[types]\nquiz = true\n"),
            (ConfigFormat::Properties, "max.score=100\ngrade.types=Quiz,Test\n"),
            (ConfigFormat::Text, "anything at all {"),
        ];
        for (format, text) in documents {
            assert_eq!(check(format, text), Ok(()), "{format:?}");
        }
    }

    #[test]
    fn a_malformed_document_is_refused_with_the_line_and_column_of_its_first_error() {
        assert_eq!(at(ConfigFormat::Json, "{\n  \"a\": 1,\n  \"b\": }\n"), (3, 8));
        assert_eq!(at(ConfigFormat::Yaml, "a: 1\nb: [1, 2\n"), (3, 1));
        assert_eq!(at(ConfigFormat::Toml, "a = 1\nb = = 2\n"), (2, 5));
        let properties = check(ConfigFormat::Properties, "a=1\nb=\\u12G4\n").expect_err("bad escape");
        assert_eq!(properties.line, 2, "{properties}");
    }

    #[test]
    fn a_json_message_says_its_position_once() {
        let error = check(ConfigFormat::Json, "[1,").expect_err("truncated");
        assert!(!error.message.contains("line"), "{}", error.message);
        assert!(error.to_string().starts_with("line 1, column 3: "), "{error}");
    }
}
