//! Numbers claimed on a bucket: what a folder's library hands out under its library lock
//! (image ids, an image's version numbers) is taken there by putting
//! `<folder>/<number, 20 digits>` with `If-None-Match: *`. Of writers racing for a number one
//! gets it and the others go on to the next, so numbers are unique without a lock and without
//! trusting a listing (a listing only says where to start). The object holds the claimant's
//! lease holder, so that `check` can tell a claim whose writer died (its lease dead, no row)
//! from one still being written.

use super::Bucket;
use std::io;

/// How many numbers past the highest listed a claimant tries before giving up: only that
/// many writers claiming in the same instant could take them all.
const TRIES: u64 = 1024;

/// The key of `number`'s claim under `folder`.
pub fn claim_key(folder: &str, number: u64) -> String {
    format!("{folder}/{number:020}")
}

/// Claims the lowest free number above the highest claimed under `folder` (from 1), for
/// `holder`, and returns it.
pub fn claim_next(bucket: &Bucket, folder: &str, holder: &str) -> io::Result<u64> {
    let highest = highest_claimed(bucket, folder)?;
    for number in highest + 1..=highest + TRIES {
        if bucket.put_new(&claim_key(folder, number), holder.as_bytes().to_vec())? {
            return Ok(number);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("{TRIES} numbers after {highest} were claimed under {} while this writer tried", bucket.url(folder)),
    ))
}

/// The highest number claimed under `folder`, 0 if none. Keys that are not a claim's are
/// not numbers anyone claimed, and are passed over.
pub fn highest_claimed(bucket: &Bucket, folder: &str) -> io::Result<u64> {
    let listed = bucket.list(folder)?;
    Ok(listed.iter().filter_map(|o| o.key.rsplit('/').next()?.parse::<u64>().ok()).max().unwrap_or(0))
}

/// Who claimed `number` under `folder` (the lease holder it names), if anyone did.
pub fn claimant(bucket: &Bucket, folder: &str, number: u64) -> io::Result<Option<String>> {
    Ok(bucket.get(&claim_key(folder, number))?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}
