//! Byte offset → line number translation for error reporting.

use std::ops::Range;

/// Start offsets of every line in a text, so a toml_edit span (byte range)
/// can be turned into the 1-based line number users see in their editor.
pub(crate) struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(offset, _)| offset + 1))
            .collect();
        Self { line_starts }
    }

    /// 1-based line containing `offset`; offsets past the end map to the last line.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .max(1)
    }

    /// 1-based column (in characters) of `offset` within its line.
    pub fn column_of(&self, text: &str, offset: usize) -> usize {
        let line_start = self.line_starts[self.line_of(offset) - 1];
        let offset = offset.min(text.len());
        text.get(line_start..offset)
            .map_or(offset - line_start, |prefix| prefix.chars().count())
            + 1
    }

    pub fn line_of_span(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|span| self.line_of(span.start))
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn offsets_map_to_one_based_lines() {
        let text = "a = 1\nb = 2\n\nc = 3";
        let lines = LineIndex::new(text);
        assert_eq!(lines.line_of(0), 1);
        assert_eq!(lines.line_of(5), 1, "the newline belongs to its line");
        assert_eq!(lines.line_of(6), 2);
        assert_eq!(lines.line_of(12), 3);
        assert_eq!(lines.line_of(13), 4);
        assert_eq!(lines.line_of(999), 4);
        assert_eq!(lines.column_of(text, 10), 5);
    }
}
