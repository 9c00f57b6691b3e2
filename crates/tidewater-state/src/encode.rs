//! Operator state as Arrow IPC streams, each with a CRC-32 so that a truncated or
//! damaged file is recognised before it is restored.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use tidewater_core::Result;

/// Encodes `batches` (all of one schema) as one IPC stream. Returns the bytes and their
/// CRC-32, or `None` when there is nothing to store.
pub fn encode_batches(batches: &[RecordBatch]) -> Result<Option<(Vec<u8>, u32)>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let mut w = StreamWriter::try_new(Vec::new(), &first.schema())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    let bytes = w.into_inner()?;
    let crc = crc32fast::hash(&bytes);
    Ok(Some((bytes, crc)))
}

/// Decodes a stream written by [`encode_batches`] after checking its length and CRC.
/// The error says what is wrong (for the warning that names the file).
pub fn decode_batches(
    bytes: &[u8],
    expected_len: u64,
    expected_crc: u32,
) -> std::result::Result<Vec<RecordBatch>, String> {
    if bytes.len() as u64 != expected_len {
        return Err(format!(
            "{} bytes, the manifest says {expected_len} (truncated?)",
            bytes.len()
        ));
    }
    let crc = crc32fast::hash(bytes);
    if crc != expected_crc {
        return Err(format!(
            "checksum {crc:08x}, the manifest says {expected_crc:08x} (damaged)"
        ));
    }
    let reader = StreamReader::try_new(bytes, None).map_err(|e| format!("not Arrow IPC: {e}"))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not Arrow IPC: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let b = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let (bytes, crc) = encode_batches(&[b.clone(), b.clone()]).unwrap().unwrap();
        let back = decode_batches(&bytes, bytes.len() as u64, crc).unwrap();
        assert_eq!(back, vec![b.clone(), b]);
        let cut = &bytes[..bytes.len() - 9];
        assert!(
            decode_batches(cut, bytes.len() as u64, crc)
                .unwrap_err()
                .contains("truncated")
        );
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 0x40;
        assert!(
            decode_batches(&bad, bytes.len() as u64, crc)
                .unwrap_err()
                .contains("damaged")
        );
        assert!(encode_batches(&[]).unwrap().is_none());
    }
}
