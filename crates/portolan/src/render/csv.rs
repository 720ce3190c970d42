//! CSV through the `csv` crate (RFC 4180 quoting), with every field escaped for a terminal
//! first: a hostile process name can inject neither rows nor escape sequences into a CSV
//! that someone `cat`s.

use std::io::{self, Write};

use portolan_core::escape::for_terminal;

/// A CSV writer over the command's output.
pub struct CsvOut<'a> {
    inner: ::csv::Writer<&'a mut dyn Write>,
}

impl std::fmt::Debug for CsvOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsvOut")
    }
}

impl<'a> CsvOut<'a> {
    pub fn new(w: &'a mut dyn Write) -> CsvOut<'a> {
        CsvOut {
            inner: ::csv::WriterBuilder::new().flexible(false).from_writer(w),
        }
    }

    /// One row (the header is a row too). Each field is escaped, then quoted as needed.
    pub fn row<I, S>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let escaped: Vec<String> = fields
            .into_iter()
            .map(|f| for_terminal(f.as_ref()).into_owned())
            .collect();
        self.inner.write_record(&escaped).map_err(csv_io)
    }

    /// Writes out what is buffered (and flushes the writer), keeping the writer for more
    /// rows.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Flushes what is buffered.
    pub fn finish(mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Flushes what is buffered and gives the writer back.
    pub fn into_inner(self) -> io::Result<&'a mut dyn Write> {
        self.inner
            .into_inner()
            .map_err(::csv::IntoInnerError::into_error)
    }
}

/// The csv crate's error as an I/O error (a broken pipe stays a broken pipe).
fn csv_io(e: ::csv::Error) -> io::Error {
    match e.into_kind() {
        ::csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(fields: &[&str]) -> String {
        let mut v = Vec::new();
        let mut c = CsvOut::new(&mut v);
        c.row(fields).unwrap();
        c.finish().unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(one(&["nginx", "a,b"]), "nginx,\"a,b\"\n");
        assert_eq!(one(&["say \"hi\""]), "\"say \"\"hi\"\"\"\n");
        assert_eq!(one(&["x\ny", "\x1b[2J"]), "x\\ny,\\x1b[2J\n");
    }
}
