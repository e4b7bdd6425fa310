//! The protected header maps of both layers: encoding and strict decoding.

use super::cbor::{self, int_value, Label, Reader};
use super::{AeadAlg, EnvelopeError, EnvelopeHeader, Layer};
use crate::formats::ids::is_valid_id;
use crate::formats::keys::SignAlg;

pub const LABEL_ALG: i64 = 1;
pub const LABEL_CRIT: i64 = 2;
pub const LABEL_KID: i64 = 4;
pub const LABEL_GROUP: i64 = -65537;
pub const LABEL_EPOCH: i64 = -65538;
pub const LABEL_SEQ: i64 = -65539;
pub const LABEL_TIMESTAMP: i64 = -65540;

/// The exact `crit` value: the private labels, in deterministic order.
pub const CRITICAL_LABELS: [i64; 4] = [LABEL_GROUP, LABEL_EPOCH, LABEL_SEQ, LABEL_TIMESTAMP];

/// Sign1 labels in deterministic (encoded-bytes) order, with their names.
const SIGN1_LABELS: [(i64, &str); 7] = [
    (LABEL_ALG, "alg (1)"),
    (LABEL_CRIT, "crit (2)"),
    (LABEL_KID, "kid (4)"),
    (LABEL_GROUP, "group (-65537)"),
    (LABEL_EPOCH, "epoch (-65538)"),
    (LABEL_SEQ, "seq (-65539)"),
    (LABEL_TIMESTAMP, "timestamp (-65540)"),
];

/// Signature algorithms accepted on verify: (COSE value, algorithm).
/// -19 (Ed25519) and -9 (ESP256) are fully specified (RFC 9864) and are what
/// we emit; -8 (EdDSA) and -7 (ES256) are their polymorphic predecessors, accepted
/// with the same meaning because the sender's key fixes the curve.
pub fn sign_alg_from_cose(value: i64) -> Option<SignAlg> {
    match value {
        -19 | -8 => Some(SignAlg::Ed25519),
        -9 | -7 => Some(SignAlg::P256),
        _ => None,
    }
}

/// Encodes the Sign1 protected header map.
pub fn encode_sign1_protected(
    alg: SignAlg,
    sender: &str,
    group: &str,
    epoch: u64,
    seq: u64,
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + sender.len() + group.len());
    cbor::write_head(&mut out, cbor::MAP, 7);
    cbor::write_int(&mut out, LABEL_ALG);
    cbor::write_int(&mut out, alg.cose_alg());
    cbor::write_int(&mut out, LABEL_CRIT);
    cbor::write_head(&mut out, cbor::ARRAY, CRITICAL_LABELS.len() as u64);
    for label in CRITICAL_LABELS {
        cbor::write_int(&mut out, label);
    }
    cbor::write_int(&mut out, LABEL_KID);
    cbor::write_bstr(&mut out, sender.as_bytes());
    cbor::write_int(&mut out, LABEL_GROUP);
    cbor::write_tstr(&mut out, group);
    cbor::write_int(&mut out, LABEL_EPOCH);
    cbor::write_head(&mut out, cbor::UINT, epoch);
    cbor::write_int(&mut out, LABEL_SEQ);
    cbor::write_head(&mut out, cbor::UINT, seq);
    cbor::write_int(&mut out, LABEL_TIMESTAMP);
    cbor::write_head(&mut out, cbor::UINT, timestamp_ms);
    out
}

/// Encodes the Encrypt0 protected header map `{1: alg}`.
pub fn encode_encrypt0_protected(aead: AeadAlg) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    cbor::write_head(&mut out, cbor::MAP, 1);
    cbor::write_int(&mut out, LABEL_ALG);
    cbor::write_int(&mut out, aead.cose_alg());
    out
}

/// Reads one map key: checks it is an int or tstr label, not a duplicate
/// of one already seen (`seen` holds the known labels' slots), and strictly
/// after the previous key in encoded-byte order.
struct MapKeys<'a> {
    previous: Option<&'a [u8]>,
    layer: Layer,
}

impl<'a> MapKeys<'a> {
    fn next(&mut self, r: &mut Reader<'a>, seen: &mut u8, slot_of: impl Fn(i64) -> Option<u8>) -> Result<(Label<'a>, Option<u8>), EnvelopeError> {
        let at = r.offset();
        let start = r.pos();
        let (major, arg) = r.head()?;
        let label = match major {
            cbor::UINT | cbor::NINT => int_value(major, arg).map_or(Label::BigInt, Label::Int),
            cbor::TSTR => Label::Text(r.text(arg, at)?.as_bytes()),
            _ => return Err(EnvelopeError::BadHeader { at, what: "header label is neither an integer nor a text string" }),
        };
        let encoded = r.since(start);
        let slot = match label {
            Label::Int(l) => slot_of(l),
            _ => None,
        };
        if let (Some(slot), Label::Int(l)) = (slot, label) {
            if *seen & (1 << slot) != 0 {
                return Err(EnvelopeError::DuplicateHeader { layer: self.layer, label: l });
            }
            *seen |= 1 << slot;
        }
        if let Some(prev) = self.previous {
            if encoded == prev {
                // Same unknown label twice (known ones were caught above).
                let label = if let Label::Int(l) = label { l } else { 0 };
                return Err(EnvelopeError::DuplicateHeader { layer: self.layer, label });
            }
            if encoded < prev {
                return Err(EnvelopeError::NonDeterministicCbor { at, what: "map keys not in ascending encoded-byte order" });
            }
        }
        self.previous = Some(encoded);
        Ok((label, slot))
    }
}

fn unknown(layer: Layer, label: Label<'_>) -> EnvelopeError {
    match label {
        Label::Int(l) => EnvelopeError::UnknownHeader { layer, label: Some(l) },
        _ => EnvelopeError::UnknownHeader { layer, label: None },
    }
}

/// Opens a protected header's map (the content of its bstr, at `base`) and
/// returns its reader and entry count. An empty bstr lacks `alg`, which both
/// layers require.
fn open_protected_map<'a>(bytes: &'a [u8], base: usize, layer: Layer, not_a_map: &'static str) -> Result<(Reader<'a>, u64), EnvelopeError> {
    if bytes.is_empty() {
        return Err(EnvelopeError::MissingHeader { layer, name: "alg (1)" });
    }
    let mut r = Reader::new(bytes, base);
    let at = r.offset();
    match r.head()? {
        (cbor::MAP, count) => Ok((r, count)),
        _ => Err(EnvelopeError::BadHeader { at, what: not_a_map }),
    }
}

/// Reads a label used as a value (`alg`, an element of `crit`): an integer
/// label's value, or None for a text label or an integer outside i64. Either
/// None is a label we do not know; anything else is `what`.
fn read_label(r: &mut Reader<'_>, what: &'static str) -> Result<Option<i64>, EnvelopeError> {
    let at = r.offset();
    match r.head()? {
        (m @ (cbor::UINT | cbor::NINT), arg) => Ok(int_value(m, arg)),
        (cbor::TSTR, len) => {
            r.text(len, at)?;
            Ok(None)
        }
        _ => Err(EnvelopeError::BadHeader { at, what }),
    }
}

fn read_uint(r: &mut Reader<'_>, what: &'static str) -> Result<u64, EnvelopeError> {
    let at = r.offset();
    match r.head()? {
        (cbor::UINT, v) => Ok(v),
        _ => Err(EnvelopeError::BadHeader { at, what }),
    }
}

fn read_id<'a>(r: &mut Reader<'a>, major: u8, what: &'static str) -> Result<&'a str, EnvelopeError> {
    let at = r.offset();
    let (m, len) = r.head()?;
    if m != major {
        return Err(EnvelopeError::BadHeader { at, what });
    }
    // A text string must be UTF-8 before its value is judged; a byte string
    // (the kid) holds bytes, so bytes that are not an id are just a bad value.
    let text = if m == cbor::TSTR { Some(r.text(len, at)?) } else { std::str::from_utf8(r.content(len)?).ok() };
    match text {
        Some(s) if is_valid_id(s) => Ok(s),
        _ => Err(EnvelopeError::BadHeader { at, what }),
    }
}

/// Parses the Sign1 protected header (the content of its bstr, at `base`).
/// Returns the header with `aead` left for the caller to fill in.
pub(crate) fn parse_sign1_protected(bytes: &[u8], base: usize) -> Result<(SignAlg, i64, EnvelopeHeaderParts<'_>), EnvelopeError> {
    let layer = Layer::Sign1;
    let (mut r, count) = open_protected_map(bytes, base, layer, "protected header is not a map")?;
    let mut keys = MapKeys { previous: None, layer };
    let mut seen = 0u8;
    let slot_of = |l: i64| SIGN1_LABELS.iter().position(|(x, _)| *x == l).map(|p| p as u8);
    let mut alg = None;
    let mut parts = EnvelopeHeaderParts::default();
    for _ in 0..count {
        let (label, slot) = keys.next(&mut r, &mut seen, slot_of)?;
        let Label::Int(label_value) = label else { return Err(unknown(layer, label)) };
        if slot.is_none() {
            return Err(unknown(layer, label));
        }
        let at = r.offset();
        match label_value {
            LABEL_ALG => {
                let value = read_label(&mut r, "alg is not an integer")?;
                let value = value.ok_or(EnvelopeError::UnsupportedAlg { layer, alg: None })?;
                let sign = sign_alg_from_cose(value).ok_or(EnvelopeError::UnsupportedAlg { layer, alg: Some(value) })?;
                alg = Some((sign, value));
            }
            LABEL_CRIT => parse_crit(&mut r)?,
            LABEL_KID => parts.sender = Some(read_id(&mut r, cbor::BSTR, "kid is not a byte string holding a valid device id")?),
            LABEL_GROUP => parts.group = Some(read_id(&mut r, cbor::TSTR, "group is not a text string holding a valid group id")?),
            LABEL_EPOCH => parts.epoch = Some(read_uint(&mut r, "epoch is not an unsigned integer")?),
            LABEL_SEQ => {
                let seq = read_uint(&mut r, "seq is not an unsigned integer")?;
                if seq == 0 {
                    return Err(EnvelopeError::BadHeader { at, what: "seq is 0 (sequence numbers start at 1)" });
                }
                parts.seq = Some(seq);
            }
            LABEL_TIMESTAMP => parts.timestamp_ms = Some(read_uint(&mut r, "timestamp is not an unsigned integer")?),
            _ => return Err(unknown(layer, label)),
        }
    }
    if !r.at_end() {
        return Err(EnvelopeError::TrailingBytes { at: r.offset(), layer: "Sign1 protected header" });
    }
    for (slot, (_, name)) in SIGN1_LABELS.iter().enumerate() {
        if seen & (1 << slot) == 0 {
            return Err(EnvelopeError::MissingHeader { layer, name });
        }
    }
    let (sign, cose) = alg.ok_or(EnvelopeError::MissingHeader { layer, name: "alg (1)" })?;
    Ok((sign, cose, parts))
}

/// `crit` must be exactly [-65537, -65538, -65539, -65540]. A label we do not
/// understand is `unknown-critical-header`; anything else wrong is `bad-header`.
fn parse_crit(r: &mut Reader<'_>) -> Result<(), EnvelopeError> {
    let at = r.offset();
    let (major, count) = r.head()?;
    if major != cbor::ARRAY || count == 0 {
        return Err(EnvelopeError::BadHeader { at, what: "crit is not a non-empty array" });
    }
    let mut matches_exactly = count == CRITICAL_LABELS.len() as u64;
    for i in 0..count {
        let at = r.offset();
        match read_label(r, "crit element is not a label")? {
            Some(l) if CRITICAL_LABELS.contains(&l) => {
                matches_exactly &= CRITICAL_LABELS.get(i as usize) == Some(&l);
            }
            Some(LABEL_ALG | LABEL_CRIT | LABEL_KID) => {
                return Err(EnvelopeError::BadHeader { at, what: "crit lists a standard header" });
            }
            other => return Err(EnvelopeError::UnknownCriticalHeader { label: other }),
        }
    }
    if !matches_exactly {
        return Err(EnvelopeError::BadHeader { at, what: "crit is not exactly [-65537, -65538, -65539, -65540]" });
    }
    Ok(())
}

/// The Sign1 header fields before the completeness check.
#[derive(Default)]
pub(crate) struct EnvelopeHeaderParts<'a> {
    pub sender: Option<&'a str>,
    pub group: Option<&'a str>,
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    pub timestamp_ms: Option<u64>,
}

impl<'a> EnvelopeHeaderParts<'a> {
    /// All present (checked by the caller through `seen`).
    pub(crate) fn complete(self, sign_alg: SignAlg, sign_cose_alg: i64, aead: AeadAlg) -> Result<EnvelopeHeader<'a>, EnvelopeError> {
        let missing = |name| EnvelopeError::MissingHeader { layer: Layer::Sign1, name };
        Ok(EnvelopeHeader {
            sign_alg,
            sign_cose_alg,
            sender: self.sender.ok_or(missing("kid (4)"))?,
            group: self.group.ok_or(missing("group (-65537)"))?,
            epoch: self.epoch.ok_or(missing("epoch (-65538)"))?,
            seq: self.seq.ok_or(missing("seq (-65539)"))?,
            timestamp_ms: self.timestamp_ms.ok_or(missing("timestamp (-65540)"))?,
            aead,
        })
    }
}

/// Parses the Encrypt0 protected header: exactly `{1: 3}` or `{1: 24}`.
pub(crate) fn parse_encrypt0_protected(bytes: &[u8], base: usize) -> Result<AeadAlg, EnvelopeError> {
    let layer = Layer::Encrypt0;
    let (mut r, count) = open_protected_map(bytes, base, layer, "Encrypt0 protected header is not a map")?;
    let mut keys = MapKeys { previous: None, layer };
    let mut seen = 0u8;
    let mut aead = None;
    for _ in 0..count {
        let (label, slot) = keys.next(&mut r, &mut seen, |l| (l == LABEL_ALG).then_some(0))?;
        if slot.is_none() {
            return Err(unknown(layer, label));
        }
        let value = read_label(&mut r, "alg is not an integer")?;
        let value = value.ok_or(EnvelopeError::UnsupportedAlg { layer, alg: None })?;
        aead = Some(AeadAlg::from_cose(value).ok_or(EnvelopeError::UnsupportedAlg { layer, alg: Some(value) })?);
    }
    if !r.at_end() {
        return Err(EnvelopeError::TrailingBytes { at: r.offset(), layer: "Encrypt0 protected header" });
    }
    aead.ok_or(EnvelopeError::MissingHeader { layer, name: "alg (1)" })
}
