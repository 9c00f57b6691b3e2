//! Reading standard input in chunks of whole lines.

use std::io::Stdin;

use arrow::record_batch::RecordBatch;
use tidewater_core::Result;
use tidewater_runtime::SourceReader;

use crate::format::{ChunkDecoder, Format, LineReader};
use crate::registry::SourceContext;

/// The single reader of standard input.
#[derive(Debug)]
pub struct StdinSource {
    lines: LineReader<Stdin>,
    decoder: ChunkDecoder,
}

impl SourceReader for StdinSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while let Some(chunk) = self.lines.next_chunk()? {
            if let Some(b) = self.decoder.decode(&chunk)? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }
}

pub(super) fn create(ctx: &SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>> {
    let format = Format::from_options(ctx.options)?;
    // Small chunks: a pipe delivers data as it comes and results should not wait.
    let mut lines = LineReader::new(std::io::stdin(), "stdin".into(), false, 64 << 10);
    if format.skips_header() {
        lines.skip_line()?;
    }
    let decoder = ChunkDecoder::new(
        format,
        ctx.schema.clone(),
        ctx.dead_letters.clone(),
        ctx.metrics.clone(),
    );
    Ok(vec![Box::new(StdinSource { lines, decoder })])
}
