//! Helpers for looking at raw toml_edit values: describing their type in
//! error messages and re-rendering plugin settings as one-line TOML.

use toml_edit::{Array, InlineTable, Item, Key, Value};

/// "a string", "an integer", … for "found …" in type errors.
pub(crate) fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(value) => match value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date/time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

/// `key = value` on a single line, for the settings text handed to a plugin.
///
/// Values are rebuilt rather than copied so comments, line breaks inside
/// multi-line arrays and multi-line string literals from the original file
/// can't break the one-setting-per-line layout plugins rely on. Sub-tables
/// (`[plugins.x.sub]`, dotted keys, `[[plugins.x.list]]`) become inline tables.
pub(crate) fn settings_line(key: &str, item: &Item) -> Option<String> {
    let value = inline_value(item)?;
    Some(format!("{} = {}", Key::new(key), value.to_string().trim()))
}

fn inline_value(item: &Item) -> Option<Value> {
    match item {
        Item::None => None,
        Item::Value(value) => Some(rebuilt(value)),
        Item::Table(table) => {
            let inline: InlineTable = table
                .iter()
                .filter_map(|(key, item)| Some((key, inline_value(item)?)))
                .collect();
            Some(Value::InlineTable(formatted_table(inline)))
        }
        Item::ArrayOfTables(tables) => {
            let array: Array = tables
                .iter()
                .map(|table| inline_value(&Item::Table(table.clone())))
                .collect::<Option<_>>()?;
            Some(Value::Array(formatted_array(array)))
        }
    }
}

/// A copy of `value` without any of its original formatting.
fn rebuilt(value: &Value) -> Value {
    match value {
        Value::String(s) => single_line_string(s.value()),
        Value::Integer(i) => Value::from(*i.value()),
        Value::Float(f) => Value::from(*f.value()),
        Value::Boolean(b) => Value::from(*b.value()),
        Value::Datetime(d) => Value::from(*d.value()),
        Value::Array(array) => Value::Array(formatted_array(array.iter().map(rebuilt).collect())),
        Value::InlineTable(table) => Value::InlineTable(formatted_table(
            table
                .iter()
                .map(|(key, value)| (key, rebuilt(value)))
                .collect(),
        )),
    }
}

/// A basic `"..."` string with newlines and other control characters
/// escaped; toml_edit would otherwise pick a multi-line `"""` literal.
fn single_line_string(text: &str) -> Value {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
        .parse()
        .expect("an escaped basic string is always valid TOML")
}

fn formatted_array(mut array: Array) -> Array {
    array.fmt();
    array
}

fn formatted_table(mut table: InlineTable) -> InlineTable {
    table.fmt();
    table
}
