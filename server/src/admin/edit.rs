//! Changes made through the admin API, written back into the operator's TOML file with
//! `toml_edit`, so that comments and layout survive and a restart keeps the change.

use toml_edit::{Array, DocumentMut, Item, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the configuration file does not parse: {0}")]
    Parse(String),
    #[error("the configuration file has no [[point]] named `{0}`")]
    NoSuchPoint(String),
}

/// `text` with the `protocols` of the point named `point` set to `protocols`; everything
/// else (comments, order, spacing, the array's own trailing comment) is kept.
pub fn set_point_protocols(
    text: &str,
    point: &str,
    protocols: &[String],
) -> Result<String, EditError> {
    let mut document: DocumentMut = text
        .parse()
        .map_err(|error: toml_edit::TomlError| EditError::Parse(error.message().to_owned()))?;
    let table = document
        .get_mut("point")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|points| {
            points
                .iter_mut()
                .find(|table| table.get("name").and_then(Item::as_str) == Some(point))
        })
        .ok_or_else(|| EditError::NoSuchPoint(point.to_owned()))?;
    let mut array: Array = protocols.iter().map(String::as_str).collect();
    match table.get_mut("protocols").and_then(Item::as_value_mut) {
        Some(existing) => {
            let decor = existing.decor().clone();
            *existing = Value::Array(array);
            *existing.decor_mut() = decor;
        }
        None => {
            array.set_trailing_comma(false);
            table.insert("protocols", Item::Value(Value::Array(array)));
        }
    }
    Ok(document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# Operator's notes stay.
[plugins.http]
listen = ["127.0.0.1:8080"]

[[point]]
name = "live"   # the main channel
protocols = ["http", "rtsp"]  # who may play it
kind = "broadcast"

[[point]]
name = "vod"
protocols = ["http"]
"#;

    #[test]
    fn only_the_protocols_of_the_named_point_change() {
        let edited = set_point_protocols(FILE, "live", &["http".to_owned()]).unwrap();
        let expected = FILE.replace(
            r#"protocols = ["http", "rtsp"]  # who may play it"#,
            r#"protocols = ["http"]  # who may play it"#,
        );
        assert_eq!(edited, expected);
    }

    #[test]
    fn an_unknown_point_is_an_error() {
        assert_eq!(
            set_point_protocols(FILE, "nope", &[]),
            Err(EditError::NoSuchPoint("nope".into()))
        );
    }
}
