//! Encoding rows as RFC 4180 CSV (comma, CRLF, double-quote escaping) with the formula guard.

use std::borrow::Cow;

use actix_web::web::Bytes;
use anyhow::Context;

/// One cell of a row. Text may be anything a tenant or an admin chose (a function name, a
/// charge key), so it is guarded against spreadsheet formulas; numbers are written as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Text(&'a str),
    /// A decimal as text with a dot and no grouping, e.g. `-1.20`: never altered.
    Number(&'a str),
    /// A null: an empty cell.
    Empty,
}

impl<'a> Cell<'a> {
    pub fn text_or_empty(text: Option<&'a str>) -> Cell<'a> {
        text.map_or(Cell::Empty, Cell::Text)
    }

    pub fn number_or_empty(number: Option<&'a str>) -> Cell<'a> {
        number.map_or(Cell::Empty, Cell::Number)
    }
}

/// A text cell that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`, `@`,
/// tab or CR) gets a leading `'`, which spreadsheets show as text.
pub fn guard_formula(text: &str) -> Cow<'_, str> {
    if looks_like_formula(text) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn looks_like_formula(text: &str) -> bool {
    matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// Encodes rows into a buffer that is taken out in chunks.
pub struct CsvEncoder {
    writer: csv::Writer<Vec<u8>>,
    /// Reused for guarded cells so that a hot loop does not allocate per cell.
    scratch: Vec<u8>,
}

impl Default for CsvEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvEncoder {
    pub fn new() -> CsvEncoder {
        CsvEncoder {
            writer: Self::writer(Vec::new()),
            scratch: Vec::new(),
        }
    }

    fn writer(buffer: Vec<u8>) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(buffer)
    }

    pub fn row(&mut self, cells: &[Cell<'_>]) -> anyhow::Result<()> {
        for cell in cells {
            let field: &[u8] = match *cell {
                Cell::Text(text) if looks_like_formula(text) => {
                    self.scratch.clear();
                    self.scratch.push(b'\'');
                    self.scratch.extend_from_slice(text.as_bytes());
                    &self.scratch
                }
                Cell::Text(text) => text.as_bytes(),
                Cell::Number(number) => number.as_bytes(),
                Cell::Empty => b"",
            };
            self.writer
                .write_field(field)
                .context("encode a CSV cell")?;
        }
        self.writer
            .write_record(None::<&[u8]>)
            .context("end a CSV row")
    }

    /// Bytes encoded but not yet taken (give or take the writer's own small buffer).
    pub fn buffered(&self) -> usize {
        self.writer.get_ref().len()
    }

    /// Everything encoded so far.
    pub fn take(&mut self) -> anyhow::Result<Bytes> {
        let capacity = self.buffered() + 16 * 1024;
        let writer =
            std::mem::replace(&mut self.writer, Self::writer(Vec::with_capacity(capacity)));
        let buffer = writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flush the CSV encoder: {}", e.error()))?;
        Ok(Bytes::from(buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rows: &[&[Cell<'_>]]) -> String {
        let mut encoder = CsvEncoder::new();
        for row in rows {
            encoder.row(row).unwrap();
        }
        String::from_utf8(encoder.take().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn quoting_is_rfc_4180_with_crlf() {
        let text = encode(&[
            &[Cell::Text("a"), Cell::Text("b"), Cell::Text("c")],
            &[
                Cell::Text("comma, \"quote\"\nnewline"),
                Cell::Empty,
                Cell::Text("plain"),
            ],
            &[Cell::Text("grüße 函数"), Cell::Number("0.40"), Cell::Empty],
        ]);
        assert_eq!(
            text,
            "a,b,c\r\n\"comma, \"\"quote\"\"\nnewline\",,plain\r\ngrüße 函数,0.40,\r\n"
        );
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(rows[1], ["comma, \"quote\"\nnewline", "", "plain"]);
        assert_eq!(rows[2], ["grüße 函数", "0.40", ""]);
    }

    #[test]
    fn formulas_are_guarded_and_numbers_are_not() {
        for (input, expected) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("-1+2", "'-1+2"),
            ("+1", "'+1"),
            ("@sum", "'@sum"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("a=b", "a=b"),
            ("'=x", "'=x"),
            ("", ""),
        ] {
            assert_eq!(guard_formula(input), expected, "{input:?}");
            let line = encode(&[&[Cell::Text(input)]]);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes());
            let record = reader.records().next();
            let got = record.map_or(String::new(), |r| r.unwrap()[0].to_owned());
            assert_eq!(got, expected, "{input:?} encoded as {line:?}");
        }
        assert_eq!(encode(&[&[Cell::Number("-1.20")]]), "-1.20\r\n");
    }

    #[test]
    fn chunks_are_taken_whole() {
        let mut encoder = CsvEncoder::new();
        encoder.row(&[Cell::Text("x"), Cell::Number("1")]).unwrap();
        let first = encoder.take().unwrap();
        encoder.row(&[Cell::Text("y"), Cell::Number("2")]).unwrap();
        let second = encoder.take().unwrap();
        assert_eq!(&first[..], b"x,1\r\n");
        assert_eq!(&second[..], b"y,2\r\n");
        assert!(encoder.take().unwrap().is_empty());
    }
}
