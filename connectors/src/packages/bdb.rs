//! Berkeley DB hash databases, read-only and just far enough for rpm's `Packages` file of
//! RHEL 7 and 8 and Fedora before 33: every key and value of a hash database, values kept on
//! overflow pages included. Written here because no maintained Rust crate reads the format;
//! it is the on-disk layout of Berkeley DB 4 to 6 (pages with a 26-byte header, a meta page
//! first), in either byte order.
//!
//! Rather than follow the buckets, every page is visited once in file order: each hash page
//! holds key and value items in turn, and a value too big for its page points at a chain of
//! overflow pages. Chains are bounded by the file's pages and visited once each.

/// The hash access method's magic, and the page types read here.
const HASH_MAGIC: u32 = 0x0006_1561;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
/// Item types on hash pages.
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
/// The page header: log sequence number, page numbers, entry count, free offset, level, type.
const PAGE_HDR: usize = 26;
/// Meta page flag: pages carry checksums, which move the page header.
const META_CHKSUM: u8 = 0x01;

/// A key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Every record of the hash database in `file`, in page order. Errors name the page.
pub fn read(file: &[u8], max_value: usize) -> Result<Vec<Record>, String> {
    let raw32 = |at: usize| file.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    let magic = raw32(12).ok_or("shorter than a meta page")?;
    // The byte order of the machine that wrote it.
    let big = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
        (HASH_MAGIC, _) => false,
        (_, HASH_MAGIC) => true,
        _ => return Err("not a Berkeley DB hash database (magic)".into()),
    };
    let u32_at = |page: &[u8], at: usize| {
        page.get(at..at + 4).map_or(0, |b| {
            let b = [b[0], b[1], b[2], b[3]];
            if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        })
    };
    let u16_at = |page: &[u8], at: usize| {
        page.get(at..at + 2)
            .map_or(0, |b| if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    };
    let page_size = u32_at(file, 20) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("page size {page_size} is not a power of two of 512 to 64 KiB"));
    }
    if file.get(25) != Some(&P_HASHMETA) {
        return Err("page 0 is not a hash meta page".into());
    }
    if file.get(24).is_some_and(|&alg| alg != 0) || file.get(26).is_some_and(|f| f & META_CHKSUM != 0) {
        return Err("encrypted or checksummed databases are not read".into());
    }
    // The meta page's last page number: a file cut short is refused, not read in part.
    let pages = usize::try_from(u32_at(file, 32)).map_or(usize::MAX, |last| last.saturating_add(1));
    if pages > file.len() / page_size {
        return Err(format!("the file holds {} bytes, its meta page counts {pages} pages of {page_size}", file.len()));
    }
    // Pages past the meta page's count are not the database's (a file may be longer).
    let page = |n: usize| file.get(n * page_size..(n + 1) * page_size).filter(|_| n < pages);
    let mut used_overflow = vec![false; pages];
    let mut out = Vec::new();
    for n in 1..pages {
        let Some(p) = page(n) else { break };
        let kind = p[25];
        if kind != P_HASH && kind != P_HASH_UNSORTED {
            continue;
        }
        let entries = usize::from(u16_at(p, 20));
        if PAGE_HDR + entries * 2 > page_size || entries % 2 != 0 {
            return Err(format!("page {n}: {entries} entries"));
        }
        // Items are laid from the page's end down: each ends where the one before it starts.
        let offsets: Vec<usize> = (0..entries).map(|i| usize::from(u16_at(p, PAGE_HDR + i * 2))).collect();
        let item = |i: usize| -> Result<&[u8], String> {
            let start = offsets[i];
            let end = if i == 0 { page_size } else { offsets[i - 1] };
            p.get(start..end).filter(|b| !b.is_empty()).ok_or_else(|| format!("page {n}: item {i} at {start}..{end}"))
        };
        for pair in 0..entries / 2 {
            let mut kv = [Vec::new(), Vec::new()];
            for (slot, i) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
                let it = item(i)?;
                kv[slot] = match it[0] {
                    H_KEYDATA => it[1..].to_vec(),
                    H_OFFPAGE => {
                        let (first, len) = (u32_at(it, 4) as usize, u32_at(it, 8) as usize);
                        if len > max_value {
                            return Err(format!("page {n}: item {i} of {len} bytes, more than {max_value}"));
                        }
                        let mut value = Vec::with_capacity(len);
                        let mut next = first;
                        while value.len() < len {
                            let o = page(next).filter(|_| next != 0).ok_or_else(|| {
                                format!("page {n}: item {i}: overflow page {next} lies outside the file")
                            })?;
                            if o[25] != P_OVERFLOW || std::mem::replace(&mut used_overflow[next], true) {
                                return Err(format!("page {n}: item {i}: page {next} is not an unused overflow page"));
                            }
                            let here = usize::from(u16_at(o, 22)).min(len - value.len());
                            let bytes = o.get(PAGE_HDR..PAGE_HDR + here).filter(|_| here > 0).ok_or_else(|| {
                                format!("page {n}: item {i}: overflow page {next} holds {here} bytes")
                            })?;
                            value.extend_from_slice(bytes);
                            next = u32_at(o, 16) as usize;
                        }
                        value
                    }
                    H_DUPLICATE | H_OFFDUP => return Err(format!("page {n}: duplicate keys are not read")),
                    other => return Err(format!("page {n}: item {i} has type {other}")),
                };
            }
            let [key, value] = kv;
            out.push((key, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A hash database of `records` made by Berkeley DB's own db_load, in byte order `lorder`
    /// (1234 or 4321) with pages of `page_size`.
    fn made_by_db_load(records: &[(Vec<u8>, Vec<u8>)], lorder: u32, page_size: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let esc =
            |b: &[u8]| -> String {
                b.iter()
                    .map(|&x| {
                        if (32..127).contains(&x) && x != b'\\' {
                            (x as char).to_string()
                        } else {
                            format!("\\{x:02x}")
                        }
                    })
                    .collect()
            };
        let text: String = records.iter().map(|(k, v)| format!("{}\n{}\n", esc(k), esc(v))).collect();
        std::fs::write(dir.path().join("in"), text).unwrap();
        let db = dir.path().join("db");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "db5.3_load -T -t hash -c db_lorder={lorder} -c db_pagesize={page_size} '{}' < '{}'",
                db.display(),
                dir.path().join("in").display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(db).unwrap()
    }

    #[test]
    fn reads_what_db_load_wrote_in_both_byte_orders() {
        // Small values on the hash pages, big ones on chains of overflow pages.
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0u32..40)
            .map(|i| (i.to_le_bytes().to_vec(), (0..(i * 97 % 3000)).map(|j| (j * 7 + i) as u8).collect()))
            .collect();
        for lorder in [1234, 4321] {
            let file = made_by_db_load(&records, lorder, 512);
            let mut got = read(&file, 1 << 20).unwrap();
            got.sort();
            let mut want = records.clone();
            want.sort();
            assert_eq!(got, want, "byte order {lorder}");
            // A value past the bound is refused, and so is a file cut short.
            assert!(read(&file, 100).unwrap_err().contains("more than 100"));
            let err = read(&file[..file.len() - 512], 1 << 20).unwrap_err();
            assert!(err.starts_with("the file holds"), "{err}");
        }
    }

    /// Fuzzing regression: an overflow chain pointing at a page the file holds but the meta
    /// page does not count (it once indexed past the chain bookkeeping).
    #[test]
    fn overflow_pages_past_the_count_are_refused() {
        let package = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = std::path::Path::new(&package).join("tests/regressions/bdb-overflow-page-past-the-count.bin");
        let err = read(&std::fs::read(path).unwrap(), 1 << 20).unwrap_err();
        assert!(err.contains("lies outside the file"), "{err}");
    }

    #[test]
    fn damaged_databases_are_refused_or_read_never_panic() {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            (0u32..20).map(|i| (i.to_le_bytes().to_vec(), vec![i as u8; (i as usize) * 150])).collect();
        let pristine = made_by_db_load(&records, 1234, 512);
        for file in imagelake_tests::corrupt::flipped_copies(&pristine, 3000, 4) {
            let _ = read(&file, 1 << 20);
        }
        assert!(read(b"not a database", 1 << 20).is_err());
    }
}
