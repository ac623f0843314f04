//! A bounds-checked cursor over a tag body: every read names what it was reading, so a
//! short tag is reported as the field that did not fit instead of a panic.

use super::Malformation;

/// Reads big-endian fields from the front of a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn bytes(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], Malformation> {
        if self.bytes.len() < len {
            return Err(Malformation::Truncated {
                what,
                needed: len,
                available: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Malformation> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Malformation> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A signed 24-bit integer (FLV's composition time offset).
    pub(crate) fn i24(&mut self, what: &'static str) -> Result<i32, Malformation> {
        let b = self.bytes(3, what)?;
        // Shift into the top of an i32 and back to sign-extend.
        Ok(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
    }

    /// `len` bytes preceded by their 16-bit length (parameter sets in configuration records).
    pub(crate) fn u16_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], Malformation> {
        let len = self.u16(what)?;
        self.bytes(usize::from(len), what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_reports_the_field_that_did_not_fit() {
        let mut reader = Reader::new(&[1, 0, 2, 0xff, 0xff, 0xfe, 0, 3, 9, 9]);
        assert_eq!(reader.u8("a"), Ok(1));
        assert_eq!(reader.u16("b"), Ok(2));
        assert_eq!(reader.i24("c"), Ok(-2));
        assert_eq!(
            reader.u16_prefixed("d"),
            Err(Malformation::Truncated {
                what: "d",
                needed: 3,
                available: 2
            })
        );
    }

    #[test]
    fn sign_extends_positive_and_negative_offsets() {
        assert_eq!(Reader::new(&[0x00, 0x00, 0x28]).i24("cts"), Ok(40));
        assert_eq!(Reader::new(&[0x80, 0x00, 0x00]).i24("cts"), Ok(-(1 << 23)));
        assert_eq!(
            Reader::new(&[0x7f, 0xff, 0xff]).i24("cts"),
            Ok((1 << 23) - 1)
        );
    }
}
