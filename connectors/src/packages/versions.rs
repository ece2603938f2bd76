//! Each package manager's version order: which of two installed versions is newer, as the
//! manager itself decides (an advisory's `fixed` version is compared by these rules).
//!
//! - [`dpkg`]: `[epoch:]upstream[-revision]` (Debian policy 5.6.12, `dpkg --compare-versions`).
//! - [`rpm`]: `[epoch:]version[-release]` (rpm's `rpmvercmp` on each part, as `labelCompare`).
//! - [`apk`]: `digits{.digits}[letter]{_suffix[digits]}[~hash][-rN]` (apk-tools 3's order);
//!   a version apk refuses is compared as apk does, up to where it goes wrong.
//!
//! Every function is total: any two strings compare, none panics or allocates without bound.

use std::cmp::Ordering;

/// The order of `manager` (`dpkg`, `rpm`, `apk`, as `packages.manager` says), or None.
pub fn compare(manager: &str, a: &str, b: &str) -> Option<Ordering> {
    match manager {
        "dpkg" => Some(dpkg(a, b)),
        "rpm" => Some(rpm(a, b)),
        "apk" => Some(apk(a, b)),
        _ => None,
    }
}

/// A run of ASCII digits as a number of any length: fewer significant digits sort first.
fn numeric(a: &[u8], b: &[u8]) -> Ordering {
    let significant = |s: &[u8]| -> usize { s.iter().position(|c| *c != b'0').unwrap_or(s.len()) };
    let (a, b) = (&a[significant(a)..], &b[significant(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn digits(s: &[u8]) -> usize {
    s.iter().take_while(|c| c.is_ascii_digit()).count()
}

// ---------------------------------------------------------------------------------------------
// dpkg

/// Debian's order: epoch as a number, then upstream version, then revision.
pub fn dpkg(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = dpkg_parts(a);
    let (eb, ub, rb) = dpkg_parts(b);
    numeric(ea, eb).then_with(|| dpkg_part(ua, ub)).then_with(|| dpkg_part(ra, rb))
}

/// `epoch:upstream-revision`; a missing epoch is 0 and a missing revision empty.
fn dpkg_parts(v: &str) -> (&[u8], &[u8], &[u8]) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.as_bytes(), rest),
        _ => (&b"0"[..], v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream.as_bytes(), revision.as_bytes()),
        None => (epoch, rest.as_bytes(), &b""[..]),
    }
}

/// dpkg's weight of a character in a non-digit run: `~` before the end of the string, then
/// letters, then everything else.
fn dpkg_weight(c: Option<&u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
        Some(c) => i32::from(*c) + 256,
    }
}

/// Alternating runs: non-digits character by character, digits as numbers.
fn dpkg_part(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
            let (wa, wb) = (dpkg_weight(a.first()), dpkg_weight(b.first()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }
        let (na, nb) = (digits(a), digits(b));
        let by_number = numeric(&a[..na], &b[..nb]);
        if by_number != Ordering::Equal {
            return by_number;
        }
        (a, b) = (&a[na..], &b[nb..]);
    }
    Ordering::Equal
}

// ---------------------------------------------------------------------------------------------
// rpm

/// rpm's order of two EVRs, as `labelCompare`: the epoch (missing is 0), the version, and the
/// release, each by [`rpmvercmp`]; a missing release is older than any.
pub fn rpm(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = rpm_parts(a);
    let (eb, vb, rb) = rpm_parts(b);
    let release = match (ra, rb) {
        (Some(ra), Some(rb)) => rpmvercmp(ra, rb),
        (ra, rb) => ra.is_some().cmp(&rb.is_some()),
    };
    rpmvercmp(ea, eb).then_with(|| rpmvercmp(va, vb)).then(release)
}

/// `epoch:version-release`: the epoch before the first `:` when it is all digits, the release
/// after the last `-`.
fn rpm_parts(evr: &str) -> (&str, &str, Option<&str>) {
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e, rest),
        _ => ("0", evr),
    };
    match rest.rsplit_once('-') {
        Some((version, release)) => (epoch, version, Some(release)),
        None => (epoch, rest, None),
    }
}

/// rpm's comparison of one version string: runs of digits (as numbers) and of letters (as
/// text), separators skipped; a digit run is newer than a letter run; `~` sorts before
/// anything, even the end, and `^` after the end but before anything else.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    loop {
        a = &a[a.iter().take_while(|c| separator(c)).count()..];
        b = &b[b.iter().take_while(|c| separator(c)).count()..];
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) | (Some(b'^'), Some(b'^')) => {
                (a, b) = (&a[1..], &b[1..]);
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), None) => return Ordering::Greater,
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, _) | (_, None) => break,
            _ => {}
        }
        let numeric_run = a[0].is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter().take_while(|c| if numeric_run { c.is_ascii_digit() } else { c.is_ascii_alphabetic() }).count()
        };
        let (na, nb) = (run(a), run(b));
        if nb == 0 {
            // Runs of different kinds: the number is newer.
            return if numeric_run { Ordering::Greater } else { Ordering::Less };
        }
        let order = if numeric_run { numeric(&a[..na], &b[..nb]) } else { a[..na].cmp(&b[..nb]) };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (&a[na..], &b[nb..]);
    }
    // What is left over wins.
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

// ---------------------------------------------------------------------------------------------
// apk

/// The kinds of apk's version tokens, in grammar order. Two versions equal up to where their
/// next tokens differ in kind: the one whose next token comes later here is the older
/// (`1.2.1` > `1.2a` > `1.2_p1` > `1.2-r1` > `1.2`; a version apk refuses is older still from
/// where it goes wrong), except that a pre-release suffix is older than anything
/// (`1.2_rc1` < `1.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    First,
    Dotted,
    Letter,
    Suffix,
    SuffixNumber,
    Hash,
    Revision,
    End,
    Invalid,
}

/// apk's suffixes in order; those before `""` (no suffix) are pre-releases.
const SUFFIXES: [&str; 10] = ["alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p"];
const RELEASE: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a [u8],
}

/// Takes the run of `rest` that `keep` accepts.
fn take<'a>(rest: &mut &'a [u8], keep: impl Fn(&u8) -> bool) -> &'a [u8] {
    let n = rest.iter().take_while(|c| keep(c)).count();
    let (run, after) = rest.split_at(n);
    *rest = after;
    run
}

/// The token after one of kind `previous` (None at the start), from `rest`: apk's grammar
/// `digits{.digits}[letter]{_suffix[digits]}[~hash][-rdigits]`.
fn apk_token<'a>(previous: Option<Kind>, rest: &mut &'a [u8]) -> Token<'a> {
    let invalid = Token { kind: Kind::Invalid, text: b"" };
    let digits = |kind, rest: &mut &'a [u8]| {
        let text = take(rest, u8::is_ascii_digit);
        if text.is_empty() { invalid } else { Token { kind, text } }
    };
    let Some(previous) = previous else { return digits(Kind::First, rest) };
    let Some(&c) = rest.first() else { return Token { kind: Kind::End, text: b"" } };
    match c {
        b'a'..=b'z' if previous <= Kind::Dotted => {
            let (text, after) = rest.split_at(1);
            *rest = after;
            Token { kind: Kind::Letter, text }
        }
        b'.' if previous <= Kind::Dotted => {
            *rest = &rest[1..];
            digits(Kind::Dotted, rest)
        }
        b'0'..=b'9' if previous == Kind::Suffix => digits(Kind::SuffixNumber, rest),
        b'_' if previous <= Kind::SuffixNumber => {
            *rest = &rest[1..];
            let text = take(rest, u8::is_ascii_lowercase);
            match SUFFIXES.iter().position(|s| !s.is_empty() && s.as_bytes() == text) {
                Some(_) => Token { kind: Kind::Suffix, text },
                None => invalid,
            }
        }
        b'~' if previous < Kind::Hash => {
            *rest = &rest[1..];
            let text = take(rest, |c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
            if text.is_empty() { invalid } else { Token { kind: Kind::Hash, text } }
        }
        b'-' if previous < Kind::Revision && rest.get(1) == Some(&b'r') => {
            *rest = &rest[2..];
            digits(Kind::Revision, rest)
        }
        _ => invalid,
    }
}

fn suffix_rank(text: &[u8]) -> usize {
    SUFFIXES.iter().position(|s| s.as_bytes() == text).unwrap_or(RELEASE)
}

/// Two tokens of one kind: numbers as numbers, but a dotted component with a leading zero as
/// text (Gentoo's rule: 1.05 < 1.5, 1.0 < 1.00); suffixes by rank; letters and hashes as text.
fn apk_token_order(a: Token, b: Token) -> Ordering {
    match a.kind {
        Kind::Dotted if a.text[0] == b'0' || b.text[0] == b'0' => a.text.cmp(b.text),
        Kind::First | Kind::Dotted | Kind::SuffixNumber | Kind::Revision => numeric(a.text, b.text),
        Kind::Suffix => suffix_rank(a.text).cmp(&suffix_rank(b.text)),
        _ => a.text.cmp(b.text),
    }
}

/// apk's order (apk-tools 3, `apk version -t`): token by token while both go on with tokens
/// of one kind, then by what comes next (see [`Kind`]).
pub fn apk(a: &str, b: &str) -> Ordering {
    let (mut ra, mut rb) = (a.as_bytes(), b.as_bytes());
    let (mut ta, mut tb) = (apk_token(None, &mut ra), apk_token(None, &mut rb));
    while ta.kind == tb.kind && ta.kind < Kind::End {
        let order = apk_token_order(ta, tb);
        if order != Ordering::Equal {
            return order;
        }
        (ta, tb) = (apk_token(Some(ta.kind), &mut ra), apk_token(Some(tb.kind), &mut rb));
    }
    let pre_release = |t: Token| t.kind == Kind::Suffix && suffix_rank(t.text) < RELEASE;
    if ta.kind == tb.kind {
        Ordering::Equal
    } else if pre_release(ta) {
        Ordering::Less
    } else if pre_release(tb) {
        Ordering::Greater
    } else {
        tb.kind.cmp(&ta.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when apk accepts `version`.
    fn apk_valid(version: &str) -> bool {
        let mut rest = version.as_bytes();
        let mut token = apk_token(None, &mut rest);
        while token.kind < Kind::End {
            token = apk_token(Some(token.kind), &mut rest);
        }
        token.kind == Kind::End
    }

    fn assert_order(order: fn(&str, &str) -> Ordering, older: &str, newer: &str) {
        assert_eq!(order(older, newer), Ordering::Less, "{older} < {newer}");
        assert_eq!(order(newer, older), Ordering::Greater, "{newer} > {older}");
    }

    #[test]
    fn dpkg_orders_as_dpkg_does() {
        // Each checked with `dpkg --compare-versions A lt B`.
        for (a, b) in [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0-1"),
            ("1.0-1", "1.0-2"),
            ("1:0.9", "2:0.1"),
            ("0.9", "1:0.1"),
            ("2.36-9+deb12u4", "2.36-9+deb12u10"),
            ("1.0a", "1.0b"),
            ("1.0", "1.0a"),
            ("1.0~", "1.0"),
            ("1.0+b1", "1.0.1"),
            ("3.0.11-1~deb12u2", "3.0.11-1"),
            ("9:1", "10:0"),
        ] {
            assert_order(dpkg, a, b);
        }
        assert_eq!(dpkg("1.01", "1.1"), Ordering::Equal);
        assert_eq!(dpkg("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(dpkg("1.0-0", "1.0-"), Ordering::Equal);
    }

    #[test]
    fn rpm_orders_as_rpmvercmp_does() {
        // rpm's own test suite's cases, in kind: numbers, letters, tilde, caret, separators.
        for (a, b) in [
            ("1.0", "1.0.1"),
            ("1.0", "1.1"),
            ("2.0", "10"),
            ("1.0a", "1.0.1"),
            ("a", "1"),
            ("1.0~rc1", "1.0"),
            ("1.0~rc1", "1.0~rc2"),
            ("1.0~~", "1.0~"),
            ("1.0", "1.0^"),
            ("1.0^", "1.0.1"),
            ("1.0^git1", "1.0^git2"),
            ("1.0~rc1^git1", "1.0~rc1.1"),
            ("0:1.0-1", "1:0.1-1"),
            ("1.0-1.el9", "1.0-2.el9"),
            ("5.2.26-3.fc40", "5.2.26-10.fc40"),
            ("1.0", "1.0-~1"),
        ] {
            assert_order(rpm, a, b);
        }
        for (a, b) in [("1.0", "1_0"), ("1.0", "1..0"), ("01", "1"), ("0:2.0", "2.0")] {
            assert_eq!(rpm(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    #[test]
    fn apk_orders_as_apk_does() {
        // Worked by hand from apk-tools 3's rules.
        for (a, b) in [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.2", "1.2.0"),
            ("1.2_rc1", "1.2"),
            ("1.2_alpha", "1.2_alpha1"),
            ("1.2_alpha9", "1.2_beta1"),
            ("1.2_beta", "1.2_pre"),
            ("1.2_pre3", "1.2_rc1"),
            ("1.2", "1.2_p1"),
            ("1.2_cvs", "1.2_svn"),
            ("1.2_git", "1.2_hg"),
            ("1.2_hg", "1.2_p"),
            ("1.2_p1", "1.2_p10"),
            ("1.2", "1.2-r1"),
            ("1.2-r1", "1.2-r10"),
            ("1.2", "1.2a"),
            ("1.2a", "1.2b"),
            ("1.2a", "1.2.1"),
            ("1.2-r5", "1.2_p1"),
            ("1.2_p1", "1.2a"),
            ("1.2~abc1", "1.2_p1"),
            ("1.2-r1", "1.2~abc1"),
            ("1.2~abc1", "1.2~abd0"),
            ("1.05", "1.5"),
            ("1.0", "1.00"),
            ("1.005", "1.05"),
            ("1.0_alpha_pre1", "1.0_alpha"),
            ("1.0_rc1-r3", "1.0-r0"),
            ("3.0.11-r0", "3.0.11-r1"),
            ("1.36.1-r2", "1.36.1-r15"),
            ("0.1.0_pre20191002222144-r0", "0.1.0_pre20210530193627-r0"),
            ("99999999999999999999", "100000000000000000000"),
            // Refused from some point on: older than what ends there.
            ("1.2-3", "1.2"),
            ("1.2_foo", "1.2"),
            ("1.0bc", "1.0b"),
            ("1.2a1", "1.2a"),
        ] {
            assert_order(apk, a, b);
        }
        for (a, b) in [("1.0", "1.0"), ("1.2-r0", "1.2-r00"), ("1.2.3_p1-r2", "1.2.3_p1-r2"), ("x", "y")] {
            assert_eq!(apk(a, b), Ordering::Equal, "{a} = {b}");
        }
        for good in ["1", "1.2.3", "1.2a", "1.2_rc1_p2", "1.2_p-r3", "1.2~0abc-r1", "2024.01.05-r0"] {
            assert!(apk_valid(good), "{good:?} is an apk version");
        }
        for bad in ["", "1.", "1..2", "1.2-3", "1.2_foo", "1.0bc", "x", "1-r", "1_", "1.2a.", "-r1", "1.2a1", "1~"] {
            assert!(!apk_valid(bad), "{bad:?} is not an apk version");
        }
    }

    #[test]
    fn any_two_strings_compare() {
        let odd = ["", "~", "^", ":", "-", "1:", ":1", "a-", "-1", "1~^~", "\u{e9}", "00000", "1.0-r", "_p"];
        for a in odd {
            for b in odd {
                for order in [dpkg, rpm, apk] {
                    assert_eq!(order(a, b), order(b, a).reverse(), "{a:?} {b:?}");
                }
            }
        }
    }
}
