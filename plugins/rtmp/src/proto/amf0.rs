//! AMF0 (Action Message Format 0), the encoding of RTMP commands and metadata.
//!
//! The decoder reads one value at a time from a slice. It is bounded: objects and arrays may
//! nest at most [`MAX_DEPTH`] deep, and element counts are never trusted for allocation (every
//! element needs at least one byte of input), so a hostile message costs at most its own size.
//! The encoder writes the subset a server answers with.

use thiserror::Error;

/// Deepest nesting of objects and arrays a decoded value may have.
pub const MAX_DEPTH: usize = 32;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

/// One AMF0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// An anonymous object: its properties in order.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    /// An associative array: properties in order (the count the encoder wrote is ignored).
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    /// Milliseconds since the epoch; the time zone field is ignored.
    Date(f64),
}

impl Value {
    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The number of a number value.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(number) => Some(*number),
            _ => None,
        }
    }

    /// The property `name` of an object or associative array.
    pub fn property(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(properties) | Value::EcmaArray(properties) => properties
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value),
            _ => None,
        }
    }
}

/// Why an AMF0 value could not be read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AmfError {
    #[error("AMF0 value cut short")]
    Truncated,
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF0 type marker {0:#04x} is not supported")]
    UnsupportedType(u8),
    #[error("AMF0 string is not UTF-8")]
    NotUtf8,
    #[error("AMF0 object end marker outside an object")]
    StrayObjectEnd,
}

/// Reads AMF0 values one after the other from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    input: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }

    /// The next value.
    pub fn value(&mut self) -> Result<Value, AmfError> {
        self.value_at(0)
    }

    /// Every remaining value.
    pub fn values(&mut self) -> Result<Vec<Value>, AmfError> {
        let mut values = Vec::new();
        while !self.is_empty() {
            values.push(self.value()?);
        }
        Ok(values)
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], AmfError> {
        if self.input.len() < count {
            return Err(AmfError::Truncated);
        }
        let (taken, rest) = self.input.split_at(count);
        self.input = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        let bytes = self.take(8)?;
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        Ok(f64::from_be_bytes(array))
    }

    fn text(&mut self, length: usize) -> Result<String, AmfError> {
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| AmfError::NotUtf8)
    }

    fn short_string(&mut self) -> Result<String, AmfError> {
        let length = self.u16()?;
        self.text(usize::from(length))
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, AmfError> {
        let marker = self.byte()?;
        match marker {
            NUMBER => Ok(Value::Number(self.f64()?)),
            BOOLEAN => Ok(Value::Boolean(self.byte()? != 0)),
            STRING => Ok(Value::String(self.short_string()?)),
            LONG_STRING => {
                let length = self.u32()?;
                let length = usize::try_from(length).map_err(|_| AmfError::Truncated)?;
                Ok(Value::String(self.text(length)?))
            }
            NULL => Ok(Value::Null),
            UNDEFINED => Ok(Value::Undefined),
            OBJECT => Ok(Value::Object(self.properties(depth + 1)?)),
            ECMA_ARRAY => {
                self.u32()?;
                Ok(Value::EcmaArray(self.properties(depth + 1)?))
            }
            STRICT_ARRAY => {
                let count = self.u32()?;
                let depth = Self::deeper(depth + 1)?;
                let mut values = Vec::new();
                for _ in 0..count {
                    values.push(self.value_at(depth)?);
                }
                Ok(Value::StrictArray(values))
            }
            DATE => {
                let millis = self.f64()?;
                self.u16()?;
                Ok(Value::Date(millis))
            }
            OBJECT_END => Err(AmfError::StrayObjectEnd),
            other => Err(AmfError::UnsupportedType(other)),
        }
    }

    fn deeper(depth: usize) -> Result<usize, AmfError> {
        if depth > MAX_DEPTH {
            Err(AmfError::TooDeep)
        } else {
            Ok(depth)
        }
    }

    /// Properties up to the empty name and object end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
        let depth = Self::deeper(depth)?;
        let mut properties = Vec::new();
        loop {
            let name = self.short_string()?;
            if name.is_empty() && self.input.first() == Some(&OBJECT_END) {
                self.take(1)?;
                return Ok(properties);
            }
            let value = self.value_at(depth)?;
            properties.push((name, value));
        }
    }
}

/// Decode every value of `input`.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>, AmfError> {
    Decoder::new(input).values()
}

/// Append `value` to `out`. Strings longer than 65535 bytes become long strings.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(number) => {
            out.push(NUMBER);
            out.extend_from_slice(&number.to_be_bytes());
        }
        Value::Boolean(flag) => out.extend_from_slice(&[BOOLEAN, u8::from(*flag)]),
        Value::String(text) => match u16::try_from(text.len()) {
            Ok(length) => {
                out.push(STRING);
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Err(_) => {
                out.push(LONG_STRING);
                let length = u32::try_from(text.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&text.as_bytes()[..length as usize]);
            }
        },
        Value::Object(properties) => {
            out.push(OBJECT);
            encode_properties(properties, out);
        }
        Value::Null => out.push(NULL),
        Value::Undefined => out.push(UNDEFINED),
        Value::EcmaArray(properties) => {
            out.push(ECMA_ARRAY);
            let count = u32::try_from(properties.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            encode_properties(properties, out);
        }
        Value::StrictArray(values) => {
            out.push(STRICT_ARRAY);
            let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for value in values {
                encode(value, out);
            }
        }
        Value::Date(millis) => {
            out.push(DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn encode_properties(properties: &[(String, Value)], out: &mut Vec<u8>) {
    for (name, value) in properties {
        // Property names are short strings; a longer one is cut, never written wrong.
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

/// Encode a sequence of values.
pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}

/// An object value from `(name, value)` pairs.
pub fn object(properties: &[(&str, Value)]) -> Value {
    Value::Object(
        properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    )
}

/// A string value.
pub fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let values = vec![
            Value::Number(1.5),
            Value::Boolean(true),
            string("connect"),
            string(&"x".repeat(70_000)),
            object(&[("app", string("live")), ("n", Value::Null)]),
            Value::Undefined,
            Value::EcmaArray(vec![("width".into(), Value::Number(1280.0))]),
            Value::StrictArray(vec![Value::Number(1.0), Value::StrictArray(vec![])]),
            Value::Date(1e12),
        ];
        let bytes = encode_all(&values);
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn a_known_connect_command_decodes() {
        // The start of ffmpeg's connect: "connect", 1.0, {app: "live"}.
        let mut bytes = vec![0x02, 0x00, 0x07];
        bytes.extend_from_slice(b"connect");
        bytes.push(0x00);
        bytes.extend_from_slice(&1.0f64.to_be_bytes());
        bytes.extend_from_slice(&[0x03, 0x00, 0x03]);
        bytes.extend_from_slice(b"app");
        bytes.extend_from_slice(&[0x02, 0x00, 0x04]);
        bytes.extend_from_slice(b"live");
        bytes.extend_from_slice(&[0x00, 0x00, 0x09]);
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(values[2].property("app"), Some(&string("live")));
    }

    #[test]
    fn nesting_a_thousand_deep_is_refused_without_recursing_that_far() {
        for marker in [OBJECT, STRICT_ARRAY, ECMA_ARRAY] {
            let mut bytes = Vec::new();
            for _ in 0..1000 {
                match marker {
                    OBJECT => bytes.extend_from_slice(&[OBJECT, 0, 1, b'a']),
                    ECMA_ARRAY => bytes.extend_from_slice(&[ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'a']),
                    _ => bytes.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]),
                }
            }
            assert_eq!(decode_all(&bytes), Err(AmfError::TooDeep));
        }
        let mut ok = Vec::new();
        for _ in 0..MAX_DEPTH {
            ok.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        ok.push(NULL);
        assert!(decode_all(&ok).is_ok());
    }

    #[test]
    fn truncated_and_unknown_input_is_an_error() {
        assert_eq!(decode_all(&[NUMBER, 0, 0]), Err(AmfError::Truncated));
        assert_eq!(decode_all(&[STRING, 0, 5, b'a']), Err(AmfError::Truncated));
        // A huge count with no elements behind it allocates nothing and fails.
        assert_eq!(
            decode_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(AmfError::Truncated)
        );
        assert_eq!(decode_all(&[0x11]), Err(AmfError::UnsupportedType(0x11)));
        assert_eq!(decode_all(&[OBJECT_END]), Err(AmfError::StrayObjectEnd));
        assert_eq!(decode_all(&[STRING, 0, 1, 0xFF]), Err(AmfError::NotUtf8));
    }
}
