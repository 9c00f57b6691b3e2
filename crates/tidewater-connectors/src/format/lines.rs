//! Reading input as chunks of whole lines, with line numbers.

use std::io::Read;
use std::sync::Arc;

use tidewater_core::{Error, Result};

/// Whole lines from one input, numbered from `first_line` (1-based).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// File path or stream name.
    pub origin: Arc<str>,
    /// Whether `origin` is a file (else a stream such as stdin).
    pub is_file: bool,
    /// Line number of the first line.
    pub first_line: u64,
    /// The bytes, ending with a newline except at the end of the input.
    pub data: Vec<u8>,
}

impl Chunk {
    /// The lines, without their `\n` / `\r\n`.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
        data.split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        if self.data.is_empty() {
            return 0;
        }
        let n = memchr::memchr_iter(b'\n', &self.data).count();
        if self.data.ends_with(b"\n") { n } else { n + 1 }
    }

    /// True when some line is empty (the fast decoder would skip it silently).
    pub fn has_empty_line(&self) -> bool {
        self.data.first() == Some(&b'\n')
            || self.data.starts_with(b"\r\n")
            || memchr::memmem::find(&self.data, b"\n\n").is_some()
            || memchr::memmem::find(&self.data, b"\n\r\n").is_some()
    }
}

/// Cuts a byte stream into chunks of whole lines of about `chunk_size` bytes. A line
/// longer than that becomes one larger chunk.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    origin: Arc<str>,
    is_file: bool,
    carry: Vec<u8>,
    /// Byte offset in the input of `carry[0]`: where the next unread line starts.
    offset: u64,
    next_line: u64,
    eof: bool,
    /// The last read returned less than asked for.
    short: bool,
    chunk_size: usize,
}

impl<R: Read> LineReader<R> {
    /// Reads `inner`, named `origin` in positions.
    pub fn new(inner: R, origin: Arc<str>, is_file: bool, chunk_size: usize) -> Self {
        Self {
            inner,
            origin,
            is_file,
            carry: Vec::new(),
            offset: 0,
            next_line: 1,
            eof: false,
            short: false,
            chunk_size: chunk_size.max(64),
        }
    }

    /// Skips the first line (a CSV header).
    pub fn skip_line(&mut self) -> Result<()> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.carry) {
                self.carry.drain(..=i);
                self.offset += i as u64 + 1;
                self.next_line += 1;
                return Ok(());
            }
            if self.eof || !self.fill()? {
                self.offset += self.carry.len() as u64;
                self.carry.clear();
                return Ok(());
            }
        }
    }

    fn fill(&mut self) -> Result<bool> {
        let start = self.carry.len();
        self.carry.resize(start + self.chunk_size, 0);
        let n = loop {
            match self.inner.read(&mut self.carry[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.carry.truncate(start);
                    return Err(Error::io("cannot read", self.origin.to_string(), e));
                }
            }
        };
        self.carry.truncate(start + n);
        self.short = n > 0 && n < self.chunk_size;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut searched = 0;
        loop {
            // A short read means the writer paused (a pipe): hand out what is complete
            // instead of waiting for a full chunk.
            if self.carry.len() >= self.chunk_size || self.eof || self.short {
                if let Some(i) =
                    memchr::memrchr(b'\n', &self.carry[searched..]).map(|i| i + searched)
                {
                    let rest = self.carry.split_off(i + 1);
                    let data = std::mem::replace(&mut self.carry, rest);
                    return Ok(Some(self.emit(data)));
                }
                searched = self.carry.len();
            }
            if self.eof {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                let data = std::mem::take(&mut self.carry);
                return Ok(Some(self.emit(data)));
            }
            self.fill()?;
        }
    }

    /// Continues numbering as if the input had started `offset` bytes and `line - 1`
    /// lines earlier (the reader was positioned at `offset` by the caller).
    pub fn resumed_at(mut self, offset: u64, line: u64) -> Self {
        self.offset = offset;
        self.next_line = line;
        self
    }

    /// Byte offset and line number of the next line not yet handed out.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.next_line)
    }

    fn emit(&mut self, data: Vec<u8>) -> Chunk {
        self.offset += data.len() as u64;
        let c = Chunk {
            origin: self.origin.clone(),
            is_file: self.is_file,
            first_line: self.next_line,
            data,
        };
        self.next_line += c.line_count() as u64;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(input: &[u8], size: usize) -> Vec<Chunk> {
        let mut r = LineReader::new(input, "t".into(), true, size);
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap_or(None) {
            out.push(c);
        }
        out
    }

    #[test]
    fn chunks_hold_whole_lines_and_number_them() {
        let input = b"a,1\nbb,2\nccc,3\nlast";
        for size in [64, 100, 1000] {
            let cs = chunks(input, size);
            let all: Vec<Vec<u8>> = cs
                .iter()
                .flat_map(|c| c.lines().map(<[u8]>::to_vec).collect::<Vec<_>>())
                .collect();
            assert_eq!(
                all,
                vec![
                    b"a,1".to_vec(),
                    b"bb,2".to_vec(),
                    b"ccc,3".to_vec(),
                    b"last".to_vec()
                ]
            );
            assert_eq!(cs[0].first_line, 1);
        }
        let long = [vec![b'x'; 500], b"\nshort\n".to_vec()].concat();
        let cs = chunks(&long, 64);
        assert_eq!(cs.iter().map(Chunk::line_count).sum::<usize>(), 2);
        assert_eq!(
            cs.last().map(|c| c.first_line + c.line_count() as u64 - 1),
            Some(2)
        );
    }

    #[test]
    fn skip_line_counts_it() {
        let mut r = LineReader::new(&b"h1,h2\nx,1\n"[..], "t".into(), true, 64);
        r.skip_line().unwrap_or(());
        let c = r.next_chunk().ok().flatten();
        assert_eq!(
            c.map(|c| (c.first_line, c.data)),
            Some((2, b"x,1\n".to_vec()))
        );
    }
}
