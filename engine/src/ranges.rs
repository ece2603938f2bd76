//! Byte ranges `[start, end)` of a disk or a filesystem, kept sorted and disjoint: what an
//! edit wrote, what delta deployment must rewrite.

/// Sorts ranges and merges those that touch.
pub(crate) fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges.into_iter().filter(|r| r.0 < r.1) {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// True when [start, end) meets one of the sorted, disjoint `ranges`.
pub(crate) fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 <= start);
    ranges.get(i).is_some_and(|r| r.0 < end)
}

/// True when [start, end) lies inside one of the sorted, disjoint `ranges`.
pub(crate) fn within(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 <= start);
    ranges.get(i).is_some_and(|r| r.0 <= start && end <= r.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer() {
        let check = |input: Vec<(u64, u64)>, expected: Vec<(u64, u64)>| {
            assert_eq!(merged(input.clone()), expected, "{input:?}")
        };
        check(vec![], vec![]);
        check(vec![(5, 5)], vec![]);
        check(vec![(10, 20), (0, 5)], vec![(0, 5), (10, 20)]);
        check(vec![(0, 5), (5, 9)], vec![(0, 9)]);
        check(vec![(0, 10), (2, 3), (9, 12)], vec![(0, 12)]);
        let ranges = [(0, 5), (10, 20)];
        for (start, end, meets, inside) in [
            (0, 1, true, true),
            (5, 10, false, false),
            (4, 11, true, false),
            (10, 20, true, true),
            (19, 25, true, false),
            (20, 30, false, false),
        ] {
            assert_eq!(overlaps(&ranges, start, end), meets, "overlaps {start}..{end}");
            assert_eq!(within(&ranges, start, end), inside, "within {start}..{end}");
        }
    }
}
