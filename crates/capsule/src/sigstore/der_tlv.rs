//! A minimal DER walker for the two places where typed parsing does not
//! give us the bytes we need: CMS signed attributes (signed as a SET, stored
//! `[0] IMPLICIT`) and the TBS certificate with its SCT list removed (what a
//! CT log signed). It reads definite lengths only, as DER requires.

/// One TLV: its tag byte, the whole encoding and the contents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub raw: &'a [u8],
    pub body: &'a [u8],
}

/// Reads the TLV at the start of `b` and returns it with the rest.
pub(crate) fn read(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let short = || "truncated DER".to_owned();
    let tag = *b.first().ok_or_else(short)?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tags are not expected here".into());
    }
    let l0 = *b.get(1).ok_or_else(short)?;
    let (len, hdr) = if l0 < 0x80 {
        (l0 as usize, 2)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err("indefinite or oversized DER length".into());
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i).ok_or_else(short)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len).ok_or_else(short)?;
    if b.len() < end {
        return Err(short());
    }
    Ok((
        Tlv {
            tag,
            raw: &b[..end],
            body: &b[hdr..end],
        },
        &b[end..],
    ))
}

/// All TLVs inside `body`, in order.
pub(crate) fn children(mut body: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (t, rest) = read(body)?;
        out.push(t);
        body = rest;
    }
    Ok(out)
}

/// Encodes a TLV with a DER length.
pub(crate) fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip_and_truncation_is_refused() {
        for n in [0usize, 5, 127, 128, 255, 256, 70_000] {
            let body = vec![7u8; n];
            let enc = encode(0x30, &body);
            let (t, rest) = read(&enc).unwrap();
            assert_eq!(
                (t.tag, t.body.len(), rest.len()),
                (0x30, n, 0),
                "length {n}"
            );
            assert!(read(&enc[..enc.len() - 1]).is_err() || n == 0, "length {n}");
        }
        assert!(read(&[0x30, 0x80, 0, 0]).is_err());
    }
}
