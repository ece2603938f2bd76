//! `?` placeholders, as Python's DBAPI (paramstyle `qmark`), JDBC and ODBC write them, turned
//! into the numbered `$1`, `$2`, ... DataFusion binds by position (it reads every `?` as one
//! and the same named placeholder).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with its `?` placeholders numbered from `$1`, left to right; `?` inside strings,
/// quoted names and comments is left alone. Text that does not tokenize is returned as it
/// is, for the parser to report.
pub fn numbered(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    // Byte offsets of the `?` tokens, from their (line, column) in characters.
    let starts: Vec<usize> = line_starts(sql);
    let mut marks = Vec::new();
    for t in &tokens {
        if matches!(&t.token, Token::Placeholder(p) if p == "?") {
            let (line, column) = (t.span.start.line as usize, t.span.start.column as usize);
            let Some(&start) = starts.get(line.wrapping_sub(1)) else { return sql.to_string() };
            let Some((offset, _)) = sql[start..].char_indices().nth(column.wrapping_sub(1)) else {
                return sql.to_string();
            };
            marks.push(start + offset);
        }
    }
    let mut out = String::with_capacity(sql.len() + marks.len() * 2);
    let mut last = 0;
    for (n, at) in marks.into_iter().enumerate() {
        if sql.as_bytes().get(at) != Some(&b'?') {
            return sql.to_string();
        }
        out.push_str(&sql[last..at]);
        out.push_str(&format!("${}", n + 1));
        last = at + 1;
    }
    out.push_str(&sql[last..]);
    out
}

fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0).chain(sql.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            numbered("SELECT * FROM images WHERE name = ? AND version > ?"),
            "SELECT * FROM images WHERE name = $1 AND version > $2"
        );
        // Not inside strings, quoted names or comments; lines and wide characters counted.
        assert_eq!(
            numbered("SELECT 'why?', \"a?\" -- what?\nFROM t WHERE x = ? AND y = 'é?' AND z = ?"),
            "SELECT 'why?', \"a?\" -- what?\nFROM t WHERE x = $1 AND y = 'é?' AND z = $2"
        );
        assert_eq!(numbered("SELECT $1"), "SELECT $1");
        assert_eq!(numbered("SELECT 'unterminated ?"), "SELECT 'unterminated ?");
    }
}
