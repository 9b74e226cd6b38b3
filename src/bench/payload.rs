//! The bench message: who sent it, its sequence number and send time, padded
//! to `--size` and sealed with a checksum so that any corruption shows.
//!
//! Layout (ASCII, so JSON string encoding never escapes it): `b`, client
//! index (6 hex), sequence (12 hex), send time in µs (12 hex), checksum
//! (8 hex), then padding `abc…z` repeated. The checksum covers every byte
//! but its own field.

use thiserror::Error;

/// Bytes of the header; `--size` must be at least this.
pub const HEADER_LEN: usize = 1 + 6 + 12 + 12 + 8;
/// Largest client index the header can carry.
pub const MAX_CLIENTS: usize = 1 << 24;

const MARKER: u8 = b'b';
const IDX: usize = 1;
const SEQ: usize = IDX + 6;
const TIME: usize = SEQ + 12;
const SUM: usize = TIME + 12;
const FIELD_MASK_48: u64 = (1 << 48) - 1;
const PAD: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub client: u32,
    pub seq: u64,
    /// Microseconds since the bench's clock started (intended send time in
    /// open loop).
    pub sent_us: u64,
}

/// Why a received payload is not one we sent.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is {got} bytes, expected {want}")]
    Length { got: usize, want: usize },
    #[error("payload header is malformed")]
    Malformed,
    #[error("payload checksum mismatch")]
    Checksum,
}

/// Writes the payload of `h`, exactly `size` bytes, into `out` (appending).
/// `size` must be at least [`HEADER_LEN`]; fields wrap at their width.
pub fn encode(out: &mut Vec<u8>, h: Header, size: usize) {
    debug_assert!(size >= HEADER_LEN);
    let start = out.len();
    out.push(MARKER);
    put_hex(out, u64::from(h.client), 6);
    put_hex(out, h.seq & FIELD_MASK_48, 12);
    put_hex(out, h.sent_us & FIELD_MASK_48, 12);
    out.extend_from_slice(b"00000000");
    let pad = size.saturating_sub(HEADER_LEN);
    for chunk in (0..pad).step_by(PAD.len()) {
        out.extend_from_slice(&PAD[..PAD.len().min(pad - chunk)]);
    }
    let sum = checksum(&out[start..]);
    let mut hex = [0u8; 8];
    fill_hex(&mut hex, u64::from(sum));
    out[start + SUM..start + SUM + 8].copy_from_slice(&hex);
}

/// Checks a received payload of the expected `size` and reads its header.
pub fn decode(p: &[u8], size: usize) -> Result<Header, PayloadError> {
    if p.len() != size {
        return Err(PayloadError::Length { got: p.len(), want: size });
    }
    if p.len() < HEADER_LEN || p[0] != MARKER {
        return Err(PayloadError::Malformed);
    }
    let client = read_hex(&p[IDX..SEQ]).ok_or(PayloadError::Malformed)?;
    let seq = read_hex(&p[SEQ..TIME]).ok_or(PayloadError::Malformed)?;
    let sent_us = read_hex(&p[TIME..SUM]).ok_or(PayloadError::Malformed)?;
    let sum = read_hex(&p[SUM..HEADER_LEN]).ok_or(PayloadError::Malformed)?;
    if u64::from(checksum(p)) != sum {
        return Err(PayloadError::Checksum);
    }
    Ok(Header { client: client as u32, seq, sent_us })
}

/// FNV-1a over every byte but the checksum field, 8 bytes at a time so
/// large payloads stay cheap.
fn checksum(p: &[u8]) -> u32 {
    let h = fnv(0xcbf2_9ce4_8422_2325, &p[..SUM]);
    let h = fnv(h, &p[HEADER_LEN..]);
    (h ^ (h >> 32)) as u32
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut chunks = bytes.chunks_exact(8);
    for c in chunks.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

fn put_hex(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [0u8; 16];
    fill_hex(&mut buf[..width], v);
    out.extend_from_slice(&buf[..width]);
}

fn fill_hex(buf: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in buf.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn read_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(h: Header, size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, h, size);
        v
    }

    #[test]
    fn round_trip_at_many_sizes() {
        let h = Header { client: 0xabcdef, seq: 123_456_789, sent_us: 987_654_321 };
        for size in [HEADER_LEN, HEADER_LEN + 1, 64, 100, 4096] {
            let p = make(h, size);
            assert_eq!(p.len(), size);
            assert!(p.iter().all(|b| b.is_ascii_alphanumeric()), "ASCII alphanumerics only");
            assert_eq!(decode(&p, size), Ok(h));
        }
    }

    #[test]
    fn appends_after_existing_bytes() {
        let mut v = b"\"".to_vec();
        let h = Header { client: 1, seq: 2, sent_us: 3 };
        encode(&mut v, h, 64);
        assert_eq!(decode(&v[1..], 64), Ok(h));
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let h = Header { client: 7, seq: 42, sent_us: 1000 };
        let p = make(h, 80);
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] = if q[i] == b'z' { b'y' } else { b'z' };
            assert!(decode(&q, 80).is_err(), "change at byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_length_and_garbage() {
        let p = make(Header { client: 1, seq: 1, sent_us: 1 }, 64);
        assert_eq!(decode(&p[..63], 64), Err(PayloadError::Length { got: 63, want: 64 }));
        assert_eq!(decode(&p, 65), Err(PayloadError::Length { got: 64, want: 65 }));
        assert_eq!(decode(&[b'x'; 64], 64), Err(PayloadError::Malformed));
        let mut q = p.clone();
        q[3] = b'G';
        assert_eq!(decode(&q, 64), Err(PayloadError::Malformed));
    }

    #[test]
    fn swapped_padding_is_detected() {
        let mut p = make(Header { client: 1, seq: 9, sent_us: 5 }, 64);
        p.swap(HEADER_LEN, HEADER_LEN + 1);
        assert_eq!(decode(&p, 64), Err(PayloadError::Checksum));
    }
}
