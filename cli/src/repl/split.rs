//! The statement splitter: cuts input lines into SQL statements at `;` outside quotes and
//! comments (a statement may span lines, a line may hold several), and lines starting with
//! `.` between statements into meta-commands, each with the line and column it starts at.

/// One statement of the input and where it starts (1-based line and column, in characters).
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub line: usize,
    pub column: usize,
}

impl Statement {
    /// The text preceded by as many newlines and spaces as precede it in the input, so that
    /// the positions the parser reports are the input's.
    pub fn padded(&self) -> String {
        let mut s = "\n".repeat(self.line.saturating_sub(1));
        s.push_str(&" ".repeat(self.column.saturating_sub(1)));
        s.push_str(&self.text);
        s
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Meta { text: String, line: usize },
    Sql(Statement),
}

/// Where the lexer is at the end of what it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Code,
    /// Inside '...', "..." or `...`; `backslash` for E'...' strings.
    Quote { close: char, backslash: bool },
    /// Inside /* ... */ (they nest).
    Comment { depth: u32 },
}

/// Cuts lines into statements at `;` outside quotes and comments.
#[derive(Debug, Default)]
pub struct Splitter {
    lex: Lex,
    text: String,
    start: Option<(usize, usize)>,
}

impl Splitter {
    /// Between statements: no statement begun, no quote or comment open.
    pub fn is_idle(&self) -> bool {
        self.start.is_none() && self.lex == Lex::Code
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn keep(&mut self, s: &str) {
        if self.start.is_some() {
            self.text.push_str(s);
        }
    }

    /// Feeds line number `number`; returns the meta-command or the statements it completes.
    pub fn line(&mut self, line: &str, number: usize) -> Vec<Item> {
        if self.is_idle() && line.trim_start().starts_with('.') {
            return vec![Item::Meta { text: line.trim().to_string(), line: number }];
        }
        let chars: Vec<char> = line.chars().collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match self.lex {
                Lex::Code => match c {
                    '-' if next == Some('-') => {
                        let rest: String = chars[i..].iter().collect();
                        self.keep(&rest);
                        break;
                    }
                    '/' if next == Some('*') => {
                        self.lex = Lex::Comment { depth: 1 };
                        self.keep("/*");
                        i += 2;
                        continue;
                    }
                    ';' => {
                        if let Some((line, column)) = self.start.take() {
                            items.push(Item::Sql(Statement { text: std::mem::take(&mut self.text), line, column }));
                        }
                    }
                    c if c.is_whitespace() => {
                        if self.start.is_some() {
                            self.text.push(c);
                        }
                    }
                    c => {
                        if self.start.is_none() {
                            self.start = Some((number, i + 1));
                        }
                        if matches!(c, '\'' | '"' | '`') {
                            let escapes = c == '\''
                                && i >= 1
                                && matches!(chars[i - 1], 'e' | 'E')
                                && (i < 2 || !is_word(chars[i - 2]));
                            self.lex = Lex::Quote { close: c, backslash: escapes };
                        }
                        self.text.push(c);
                    }
                },
                Lex::Quote { close, backslash } => {
                    self.text.push(c);
                    if backslash && c == '\\' {
                        if let Some(n) = next {
                            self.text.push(n);
                            i += 2;
                            continue;
                        }
                    } else if c == close {
                        if next == Some(close) {
                            self.text.push(close);
                            i += 2;
                            continue;
                        }
                        self.lex = Lex::Code;
                    }
                }
                Lex::Comment { depth } => {
                    if c == '*' && next == Some('/') {
                        self.keep("*/");
                        self.lex = if depth <= 1 { Lex::Code } else { Lex::Comment { depth: depth - 1 } };
                        i += 2;
                        continue;
                    }
                    if c == '/' && next == Some('*') {
                        self.keep("/*");
                        self.lex = Lex::Comment { depth: depth + 1 };
                        i += 2;
                        continue;
                    }
                    if self.start.is_some() {
                        self.text.push(c);
                    }
                }
            }
            i += 1;
        }
        if self.start.is_some() {
            self.text.push('\n');
        }
        items
    }

    /// The end of the input: what is left is a statement without its `;`.
    pub fn finish(&mut self) -> Option<Statement> {
        let statement = self.start.map(|(line, column)| Statement {
            text: std::mem::take(&mut self.text).trim_end().to_string(),
            line,
            column,
        });
        self.reset();
        statement
    }
}

pub fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<Item> {
        let mut s = Splitter::default();
        let mut items: Vec<Item> = text.lines().enumerate().flat_map(|(i, l)| s.line(l, i + 1)).collect();
        items.extend(s.finish().map(Item::Sql));
        items
    }

    fn sql(text: &str, line: usize, column: usize) -> Item {
        Item::Sql(Statement { text: text.into(), line, column })
    }

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT 1; SELECT ';' -- not ; here\n  , \"a;b\"; /* ; */ SELECT E'\\';';\n.tables\nSELECT 3"),
            vec![
                sql("SELECT 1", 1, 1),
                sql("SELECT ';' -- not ; here\n  , \"a;b\"", 1, 11),
                sql("SELECT E'\\';'", 2, 20),
                Item::Meta { text: ".tables".into(), line: 3 },
                sql("SELECT 3", 4, 1),
            ]
        );
        // A meta-command only between statements; a statement may span lines.
        assert_eq!(split("SELECT\n.5;\n"), vec![sql("SELECT\n.5", 1, 1)]);
        assert_eq!(sql("x", 3, 2), sql("x", 3, 2));
        let Item::Sql(s) = sql("SELEC 1", 2, 3) else { unreachable!() };
        assert_eq!(s.padded(), "\n  SELEC 1");
    }
}
