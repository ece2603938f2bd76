//! LVM2 physical volumes: the label, the metadata area and the text metadata in it, read into
//! volume groups and logical volumes, and each logical volume mapped onto the disk.
//!
//! Hand-written: no maintained crate reads LVM2 metadata without device-mapper or liblvm.
//! Linear and striped segments are supported; thin pools, RAID, mirrors, snapshots and cache
//! volumes are listed with the reason they cannot be read. Everything is bounded: the
//! metadata is read only from its own area and parsed with a depth limit.

use crate::bytes::le64;
use crate::{ReadAt, Span};

const LABEL: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
const SECTOR: u64 = 512;
/// Metadata larger than this is refused (LVM's own default area is 1 MiB).
const MAX_METADATA: u64 = 64 << 20;
const MAX_DEPTH: usize = 16;

/// What went wrong, naming the structure: messages start with `lvm2: `. A logical volume of
/// a layout imagelake does not map (thin pool, RAID...) or lying on a physical volume of
/// another disk is [`Unsupported`](crate::ErrorKind::Unsupported); a failed read is
/// [`Io`](crate::ErrorKind::Io) (or `Corrupt` when past the end of the source); the rest is
/// [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("lvm2");

/// A volume group as one physical volume's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    /// The uuid of the physical volume that was read (as in the metadata: 6-4-4-4-4-4-6).
    pub pv_uuid: String,
    pub extent_size: u64,
    pub physical_volumes: Vec<PhysicalVolume>,
    pub logical_volumes: Vec<LogicalVolume>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The name segments refer to it by ("pv0").
    pub name: String,
    pub uuid: String,
    /// Where its first extent starts, in bytes from the start of the physical volume.
    pub pe_start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    pub name: String,
    /// "linear", "striped", or the first segment type imagelake cannot read.
    pub layout: String,
    pub size: u64,
    /// Why the volume cannot be mapped (thin pool, RAID, ...), if it cannot.
    pub unsupported: Option<String>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    start_extent: u64,
    extent_count: u64,
    /// Sectors per stripe chunk (0 for linear).
    stripe_size: u64,
    /// (physical volume name, first extent on it), one per stripe.
    stripes: Vec<(String, u64)>,
}

/// True when `src` carries an LVM2 label in one of its first four sectors.
pub fn probe(src: &dyn ReadAt) -> bool {
    find_label(src).is_some()
}

fn find_label(src: &dyn ReadAt) -> Option<u64> {
    (0..4).find(|s| {
        let mut sector = [0u8; 32];
        src.read_exact_at(&mut sector, s * SECTOR).is_ok() && &sector[..8] == LABEL && &sector[24..32] == LABEL_TYPE
    })
}

/// Reads the volume group metadata of the physical volume in `src`.
pub fn read(src: &dyn ReadAt) -> Result<VolumeGroup, Error> {
    let err = corrupt;
    let sector = find_label(src).ok_or_else(|| err("no LABELONE label in the first four sectors".into()))?;
    let mut label = [0u8; 512];
    src.read_exact_at(&mut label, sector * SECTOR).map_err(|e| read_failed(&e, format!("label: {e}")))?;
    let header_at = u32::from_le_bytes([label[20], label[21], label[22], label[23]]) as usize;
    let header = label
        .get(header_at..)
        .filter(|h| h.len() >= 48)
        .ok_or_else(|| err(format!("label: PV header offset {header_at} lies outside the label sector")))?;
    let pv_uuid = format_uuid(header.get(..32).unwrap_or_default());
    // Two zero-terminated lists of (offset, size): data areas, then metadata areas.
    let mut at = 40;
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let (offset, size) = (le64(header, at), le64(header, at + 8));
            at += 16;
            if at > header.len() {
                return Err(err("label: PV header area lists run past the label sector".into()));
            }
            if offset == 0 && size == 0 {
                break;
            }
            list.push((offset, size));
        }
    }
    let (mda_offset, mda_size) = *lists[1].first().ok_or_else(|| err("PV has no metadata area".into()))?;
    let mut mda = [0u8; 512];
    src.read_exact_at(&mut mda, mda_offset)
        .map_err(|e| read_failed(&e, format!("metadata area header at {mda_offset}: {e}")))?;
    if &mda[4..20] != MDA_MAGIC {
        return Err(err(format!("metadata area header at {mda_offset}: bad magic")));
    }
    let (text_offset, text_size) = (le64(&mda, 40), le64(&mda, 48));
    if text_size == 0 || text_size > MAX_METADATA.min(mda_size) || text_offset >= mda_size {
        return Err(err(format!(
            "metadata text of {text_size} bytes at {text_offset} does not fit its {mda_size}-byte area"
        )));
    }
    // The area is a ring after its 512-byte header: the text may wrap around its end.
    let mut text = vec![0u8; text_size as usize];
    let first = text_size.min(mda_size - text_offset) as usize;
    src.read_exact_at(&mut text[..first], mda_offset.saturating_add(text_offset))
        .map_err(|e| read_failed(&e, format!("metadata text: {e}")))?;
    if first < text.len() {
        src.read_exact_at(&mut text[first..], mda_offset.saturating_add(512))
            .map_err(|e| read_failed(&e, format!("metadata text: {e}")))?;
    }
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let text = String::from_utf8_lossy(&text[..end]);
    let config = parse(&text).map_err(|e| err(format!("metadata text: {e}")))?;
    volume_group(&config, pv_uuid)
}

fn format_uuid(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if [6, 10, 14, 18, 22, 26].contains(&i) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A value of LVM's configuration syntax.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    List(Vec<Value>),
    Section(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn sections(&self) -> impl Iterator<Item = (&str, &Value)> {
        let entries = match self {
            Value::Section(e) => e.as_slice(),
            _ => &[],
        };
        entries.iter().filter(|(_, v)| matches!(v, Value::Section(_))).map(|(k, v)| (k.as_str(), v))
    }
}

fn volume_group(config: &Value, pv_uuid: String) -> Result<VolumeGroup, Error> {
    let err = |what: &str| corrupt(what.to_string());
    let (name, vg) = config.sections().next().ok_or_else(|| err("metadata has no volume group section"))?;
    let extent_size = vg
        .int("extent_size")
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(SECTOR))
        .ok_or_else(|| err("volume group has no valid extent_size"))?;
    let physical_volumes = vg
        .get("physical_volumes")
        .map(|pvs| {
            pvs.sections()
                .map(|(n, pv)| PhysicalVolume {
                    name: n.to_string(),
                    uuid: pv.str("id").unwrap_or_default().to_string(),
                    pe_start: pv.int("pe_start").unwrap_or(0).saturating_mul(SECTOR),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut logical_volumes = Vec::new();
    for (lv_name, lv) in vg.get("logical_volumes").map(|l| l.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let mut segments = Vec::new();
        let mut unsupported = None;
        let mut layout = String::new();
        for (_, seg) in lv.sections() {
            let kind = seg.str("type").unwrap_or("");
            let stripes: Vec<(String, u64)> = match seg.get("stripes") {
                Some(Value::List(items)) => items
                    .chunks(2)
                    .filter_map(|pair| match pair {
                        [Value::Str(pv), Value::Int(pe)] => Some((pv.clone(), u64::try_from(*pe).ok()?)),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let stripe_count = seg.int("stripe_count").unwrap_or(0) as usize;
            if kind != "striped" || stripes.is_empty() || stripes.len() != stripe_count {
                unsupported
                    .get_or_insert_with(|| format!("segment type {kind:?} is not supported (linear and striped are)"));
                layout = kind.to_string();
                continue;
            }
            if layout.is_empty() {
                layout = if stripe_count == 1 { "linear".into() } else { "striped".into() };
            }
            segments.push(Segment {
                start_extent: seg.int("start_extent").unwrap_or(0),
                extent_count: seg.int("extent_count").unwrap_or(0),
                stripe_size: if stripe_count > 1 { seg.int("stripe_size").unwrap_or(0) } else { 0 },
                stripes,
            });
        }
        let size = segments.iter().fold(0u64, |sum, s| sum.saturating_add(s.extent_count)).saturating_mul(extent_size);
        logical_volumes.push(LogicalVolume { name: lv_name.to_string(), layout, size, unsupported, segments });
    }
    Ok(VolumeGroup { name: name.to_string(), pv_uuid, extent_size, physical_volumes, logical_volumes })
}

impl VolumeGroup {
    /// Where logical volume `lv` lies on the disk, given where each physical volume starts
    /// on it (`pv_start` by uuid). Spans are in volume order; a volume on a physical volume
    /// that is not on this disk, or of an unsupported layout, is an error that says so.
    pub fn map(&self, lv: &LogicalVolume, pv_start: &dyn Fn(&str) -> Option<u64>) -> Result<Vec<Span>, Error> {
        if let Some(why) = &lv.unsupported {
            return Err(unsupported(format!("{}/{}: {why}", self.name, lv.name)));
        }
        // Every number here comes from the image: all arithmetic is checked.
        let overflow = || corrupt(format!("{}/{}: segment offsets overflow", self.name, lv.name));
        let extent_at = |pe: u64| pe.checked_mul(self.extent_size).ok_or_else(overflow);
        let pv_of = |name: &str, pe: u64| {
            let pv =
                self.physical_volumes.iter().find(|p| p.name == name).ok_or_else(|| {
                    corrupt(format!("{}/{}: names unknown physical volume {name}", self.name, lv.name))
                })?;
            let start = pv_start(&pv.uuid).ok_or_else(|| {
                unsupported(format!(
                    "{}/{}: lies on physical volume {} ({}), which is not on this disk",
                    self.name, lv.name, pv.name, pv.uuid
                ))
            })?;
            start.checked_add(pv.pe_start).and_then(|s| s.checked_add(extent_at(pe).ok()?)).ok_or_else(overflow)
        };
        let mut runs: Vec<Span> = Vec::new();
        let mut push = |offset: u64, disk_offset: u64, len: u64| match runs.last_mut() {
            Some(r) if r.offset + r.len == offset && r.disk_offset + r.len == disk_offset => r.len += len,
            _ => runs.push(Span { offset, disk_offset, len }),
        };
        for seg in &lv.segments {
            let seg_offset = extent_at(seg.start_extent)?;
            let seg_len = extent_at(seg.extent_count)?;
            seg_offset.checked_add(seg_len).ok_or_else(overflow)?;
            if let [(pv, pe)] = seg.stripes.as_slice() {
                let disk_offset = pv_of(pv, *pe)?;
                disk_offset.checked_add(seg_len).ok_or_else(overflow)?;
                push(seg_offset, disk_offset, seg_len);
                continue;
            }
            // Striped: chunks of stripe_size sectors go round the stripes in turn.
            let n = seg.stripes.len() as u64;
            let chunk = seg.stripe_size.checked_mul(SECTOR).filter(|&c| c > 0).ok_or_else(overflow)?;
            let round = chunk.checked_mul(n).ok_or_else(overflow)?;
            if seg_len % round != 0 || seg_len / chunk > 1 << 24 {
                return Err(corrupt(format!(
                    "{}/{}: stripe size {} does not divide the segment",
                    self.name, lv.name, seg.stripe_size
                )));
            }
            let starts: Vec<u64> = seg.stripes.iter().map(|(pv, pe)| pv_of(pv, *pe)).collect::<Result<_, Error>>()?;
            // Each stripe holds seg_len / n bytes from its start.
            if starts.iter().any(|s| s.checked_add(seg_len / n).is_none()) {
                return Err(overflow());
            }
            for (i, start) in (0..seg_len / chunk).zip(starts.iter().cycle()) {
                push(seg_offset + i * chunk, start + (i / n) * chunk, chunk);
            }
        }
        Ok(runs)
    }
}

/// Parses LVM's configuration syntax: `key = value`, `name { ... }`, strings, integers,
/// lists in brackets, `#` comments.
fn parse(text: &str) -> Result<Value, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let entries = section(&tokens, &mut pos, 0)?;
    Ok(Value::Section(entries))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Sym(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => s.extend(chars.next()),
                        Some(c) => s.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                tokens.push(Token::Str(s));
            }
            '{' | '}' | '[' | ']' | '=' | ',' => {
                chars.next();
                tokens.push(Token::Sym(c));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut s = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_digit() || *c == '-' || *c == '.') {
                    s.push(c);
                }
                // Floats (rare, e.g. in comments of old tools) are kept as their integer part.
                let int = s.split('.').next().unwrap_or("").parse().map_err(|_| format!("bad number {s:?}"))?;
                tokens.push(Token::Int(int));
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '+' => {
                let mut s = String::new();
                while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')) {
                    s.push(c);
                }
                tokens.push(Token::Ident(s));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

fn section(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Vec<(String, Value)>, String> {
    if depth > MAX_DEPTH {
        return Err("sections nest too deeply".into());
    }
    let mut entries = Vec::new();
    while let Some(token) = tokens.get(*pos) {
        match token {
            Token::Sym('}') => return Ok(entries),
            Token::Ident(key) => {
                *pos += 1;
                match tokens.get(*pos) {
                    Some(Token::Sym('{')) => {
                        *pos += 1;
                        let inner = section(tokens, pos, depth + 1)?;
                        if tokens.get(*pos) != Some(&Token::Sym('}')) {
                            return Err(format!("section {key} is not closed"));
                        }
                        *pos += 1;
                        entries.push((key.clone(), Value::Section(inner)));
                    }
                    Some(Token::Sym('=')) => {
                        *pos += 1;
                        entries.push((key.clone(), value(tokens, pos)?));
                    }
                    _ => return Err(format!("expected '=' or '{{' after {key}")),
                }
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(entries)
}

fn value(tokens: &[Token], pos: &mut usize) -> Result<Value, String> {
    let token = tokens.get(*pos).ok_or("a value is missing at the end")?;
    *pos += 1;
    match token {
        Token::Str(s) => Ok(Value::Str(s.clone())),
        Token::Int(n) => Ok(Value::Int(*n)),
        Token::Sym('[') => {
            let mut items = Vec::new();
            loop {
                match tokens.get(*pos) {
                    Some(Token::Sym(']')) => {
                        *pos += 1;
                        return Ok(Value::List(items));
                    }
                    Some(Token::Sym(',')) => *pos += 1,
                    Some(_) => items.push(value(tokens, pos)?),
                    None => return Err("a list is not closed".into()),
                }
            }
        }
        other => Err(format!("unexpected {other:?} where a value belongs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metadata_and_maps_striped_volumes() {
        let text = r#"vg1 {
            id = "abc"
            seqno = 3
            extent_size = 8192    # 4 MiB
            physical_volumes { pv0 { id = "P" pe_start = 2048 pe_count = 30 } }
            logical_volumes {
                root { segment_count = 1 segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = [ "pv0", 2 ] } }
                wide { segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 2 stripe_size = 128 stripes = [ "pv0", 10, "pv0", 20 ] } }
                pool { segment1 { start_extent = 0 extent_count = 1 type = "thin-pool" } }
            }
        }"#;
        let vg = volume_group(&parse(text).unwrap(), "P".into()).unwrap();
        assert_eq!((vg.name.as_str(), vg.extent_size), ("vg1", 4 << 20));
        let at = |start: u64| move |uuid: &str| (uuid == "P").then_some(start);
        let root = &vg.logical_volumes[0];
        assert_eq!(
            vg.map(root, &at(1 << 20)).unwrap(),
            vec![Span { offset: 0, disk_offset: (1 << 20) + (1 << 20) + (8 << 20), len: 16 << 20 }]
        );
        let wide = vg.map(&vg.logical_volumes[1], &at(0)).unwrap();
        assert_eq!(wide.len(), 128);
        assert_eq!(wide[1], Span { offset: 65536, disk_offset: (1 << 20) + (80 << 20), len: 65536 });
        assert!(vg.map(&vg.logical_volumes[2], &at(0)).unwrap_err().to_string().contains("thin-pool"));
        // Numbers near u64::MAX are errors, never overflows.
        for huge in [
            text.replace("extent_count = 4", "extent_count = 18446744073709551"),
            text.replace("[ \"pv0\", 2 ]", "[ \"pv0\", 9223372036854775807 ]"),
        ] {
            let vg = volume_group(&parse(&huge).unwrap(), "P".into()).unwrap();
            assert!(vg.map(&vg.logical_volumes[0], &at(1 << 20)).unwrap_err().to_string().contains("overflow"));
        }
        let elsewhere = |_: &str| None;
        assert!(vg.map(root, &elsewhere).unwrap_err().to_string().contains("not on this disk"));
    }

    #[test]
    fn kinds_of_errors() {
        let text = r#"vg1 {
            extent_size = 8192
            physical_volumes { pv0 { id = "P" pe_start = 2048 } pv1 { id = "Q" pe_start = 2048 } }
            logical_volumes {
                pool { segment1 { start_extent = 0 extent_count = 1 type = "thin-pool" } }
                away { segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = [ "pv1", 0 ] } }
                lost { segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = [ "pv9", 0 ] } }
            }
        }"#;
        let vg = volume_group(&parse(text).unwrap(), "P".into()).unwrap();
        let at = |uuid: &str| (uuid == "P").then_some(0);
        let kind = |i: usize| vg.map(&vg.logical_volumes[i], &at).unwrap_err().kind();
        // A thin pool, and a volume on a physical volume of another disk: valid, not read here.
        assert_eq!(kind(0), crate::ErrorKind::Unsupported);
        assert_eq!(kind(1), crate::ErrorKind::Unsupported);
        // A segment on a physical volume the metadata does not list: corrupt.
        assert_eq!(kind(2), crate::ErrorKind::Corrupt);
        // No label at all.
        assert_eq!(read(&vec![0u8; 4096]).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }
}
