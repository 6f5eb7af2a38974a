//! Reading small files (keys, signatures, trust roots) with a size cap, so a
//! hostile or mistaken file is refused instead of buffered whole.

use std::io::Read;
use std::path::Path;

#[derive(Debug)]
pub(crate) enum CappedRead {
    Io(std::io::Error),
    TooLarge,
}

/// The file's bytes, or `TooLarge` when it holds more than `max` bytes.
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, CappedRead> {
    let f = std::fs::File::open(path).map_err(CappedRead::Io)?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(CappedRead::Io)?;
    if buf.len() as u64 > max {
        return Err(CappedRead::TooLarge);
    }
    Ok(buf)
}
