//! What the log may say about a statement from the binlog: its kind and the
//! tables it names (`ALTER TABLE shop.users`), never its text, except at
//! debug level and then with every credential masked (`IDENTIFIED BY
//! '***'`); and the tables a statement-format DML statement writes, which
//! carry no rows (see the decoder's warning). A small MySQL lexer does the
//! work: quotes (`'it''s'`, backslash escapes, `"…"`, `` `…` ``), comments
//! and executable comments (`/*!50100 … */`, whose content is SQL).

use std::ops::Range;

/// One token of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word: keyword or unquoted identifier.
    Word(String),
    /// A backquoted identifier, unescaped.
    Quoted(String),
    /// A string literal (single or double quotes), possibly unterminated.
    Str,
    /// A number or anything else that is not punctuation.
    Other,
    /// One punctuation character.
    Punct(char),
    /// A plain comment (`/* … */`, `-- …`, `# …`).
    Comment,
}

/// Splits `sql` into tokens with their byte ranges. Never fails: an
/// unterminated quote or comment runs to the end.
fn lex(sql: &str) -> Vec<(Tok, Range<usize>)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Inside an executable comment `/*! … */`: its `*/` closes nothing of ours.
    let mut exec_comment = false;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if exec_comment && b[i..].starts_with(b"*/") {
            exec_comment = false;
            i += 2;
            continue;
        }
        if b[i..].starts_with(b"/*!") || b[i..].starts_with(b"/*M!") {
            i += if b[i + 2] == b'!' { 3 } else { 4 };
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            exec_comment = true;
            continue;
        }
        if b[i..].starts_with(b"/*") {
            i = match sql[i + 2..].find("*/") {
                Some(end) => i + 2 + end + 2,
                None => b.len(),
            };
            out.push((Tok::Comment, start..i));
            continue;
        }
        let dash_comment =
            b[i..].starts_with(b"--") && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace());
        if c == b'#' || dash_comment {
            i = match sql[i..].find('\n') {
                Some(end) => i + end,
                None => b.len(),
            };
            out.push((Tok::Comment, start..i));
            continue;
        }
        match c {
            b'\'' | b'"' => {
                i = skip_quoted(b, i, c, true).0;
                out.push((Tok::Str, start..i));
            }
            b'`' => {
                let (end, closed) = skip_quoted(b, i, b'`', false);
                i = end;
                let inner = &sql[start + 1..if closed { end - 1 } else { end }];
                out.push((Tok::Quoted(inner.replace("``", "`")), start..i));
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                let word = &sql[start..i];
                let tok = if word.as_bytes()[0].is_ascii_digit() {
                    Tok::Other
                } else {
                    Tok::Word(word.to_string())
                };
                out.push((tok, start..i));
            }
            _ => {
                // A whole character (never split a UTF-8 sequence).
                let ch = sql[i..].chars().next().unwrap_or(' ');
                i += ch.len_utf8();
                out.push((Tok::Punct(ch), start..i));
            }
        }
    }
    out
}

/// The end (exclusive) of the quoted token starting at `i` with `q`, and
/// whether it was closed. Doubled quotes escape; so does a backslash in
/// strings.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> (usize, bool) {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (b.len(), false)
}

fn word_is(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word(x) if x.eq_ignore_ascii_case(w))
}

/// Words that mark a statement carrying a credential.
const SENSITIVE_WORDS: &[&str] = &[
    "IDENTIFIED",
    "PASSWORD",
    "MASTER_PASSWORD",
    "SOURCE_PASSWORD",
    "USING",
    "SERVER",
    "USER",
    "GRANT",
];

/// The statement's text for a debug log: every string literal (and every
/// comment) of a statement that may carry a credential is `'***'`; other
/// statements are shown as they are. Cut after `max` characters.
pub fn masked(sql: &str, max: usize) -> String {
    let toks = lex(sql);
    let sensitive = toks
        .iter()
        .any(|(t, _)| SENSITIVE_WORDS.iter().any(|w| word_is(t, w)))
        || head_words(&toks, 2).first().is_some_and(|h| h == "CHANGE");
    let mut out = String::with_capacity(sql.len().min(max + 16));
    let mut at = 0;
    if sensitive {
        for (t, r) in &toks {
            let mask = match t {
                Tok::Str => "'***'",
                Tok::Comment => "/* *** */",
                _ => continue,
            };
            out.push_str(&sql[at..r.start]);
            out.push_str(mask);
            at = r.end;
        }
    }
    out.push_str(&sql[at..]);
    match out.char_indices().nth(max) {
        Some((i, _)) => {
            out.truncate(i);
            out.push('…');
            out
        }
        None => out,
    }
}

/// The first `n` bare words of the statement, upper case (comments skipped).
fn head_words(toks: &[(Tok, Range<usize>)], n: usize) -> Vec<String> {
    toks.iter()
        .filter(|(t, _)| !matches!(t, Tok::Comment))
        .take(n)
        .map_while(|(t, _)| match t {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .collect()
}

/// A table a statement names: (database, table); the database is the
/// statement's default one when not written.
pub(crate) type TableRef = (String, String);

/// What a statement is, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `ALTER TABLE`, `CREATE USER`, `GRANT`, `INSERT`, …
    pub kind: String,
    /// The tables a table DDL or a DML statement names (empty for others).
    pub tables: Vec<TableRef>,
}

/// Words skipped between the kind's words and the table name.
const NOISE: &[&str] = &[
    "OR",
    "REPLACE",
    "TEMPORARY",
    "IF",
    "NOT",
    "EXISTS",
    "ONLINE",
    "IGNORE",
    "OFFLINE",
    "UNIQUE",
    "FULLTEXT",
    "SPATIAL",
    "LOW_PRIORITY",
    "HIGH_PRIORITY",
    "DELAYED",
    "QUICK",
    "INTO",
];

/// Kind and tables of `sql`, whose default database is `default_db`.
pub(crate) fn summarize(sql: &str, default_db: &str) -> Summary {
    let toks: Vec<(Tok, Range<usize>)> = lex(sql)
        .into_iter()
        .filter(|(t, _)| !matches!(t, Tok::Comment))
        .collect();
    let words = head_words(&toks, 6);
    let first = words.first().cloned().unwrap_or_default();
    let object = words
        .iter()
        .skip(1)
        .find(|w| !NOISE.contains(&w.as_str()))
        .cloned();
    let kind = match (first.as_str(), object.as_deref()) {
        ("TRUNCATE", _) => "TRUNCATE TABLE".into(),
        ("ALTER" | "CREATE" | "DROP" | "RENAME", Some(o)) => format!("{first} {o}"),
        ("SET", Some("PASSWORD")) => "SET PASSWORD".into(),
        ("CHANGE", Some(o)) => format!("CHANGE {o}"),
        _ => first.clone(),
    };
    let tables = match kind.as_str() {
        "ALTER TABLE" | "CREATE TABLE" => name_after(&toks, "TABLE", default_db),
        "TRUNCATE TABLE" => match name_after(&toks, "TABLE", default_db) {
            t if t.is_empty() => name_after(&toks, "TRUNCATE", default_db),
            t => t,
        },
        "DROP TABLE" | "RENAME TABLE" => {
            table_names_after(&toks, &["TABLE", "TO", ","], default_db, &[])
        }
        "CREATE INDEX" | "DROP INDEX" => name_after(&toks, "ON", default_db),
        "INSERT" | "REPLACE" => first_table(&toks, default_db),
        "UPDATE" => table_names_after(&toks, &["UPDATE", ",", "JOIN"], default_db, &["SET"]),
        "DELETE" => table_names_after(
            &toks,
            &["DELETE", "FROM", ",", "JOIN", "USING"],
            default_db,
            &["WHERE", "ORDER", "LIMIT", "RETURNING"],
        ),
        "LOAD" => table_names_after(&toks, &["TABLE"], default_db, &[]),
        _ => Vec::new(),
    };
    Summary { kind, tables }
}

/// The name after the first `word` (noise words skipped).
fn name_after(toks: &[(Tok, Range<usize>)], word: &str, default_db: &str) -> Vec<TableRef> {
    let Some(k) = toks.iter().position(|(t, _)| word_is(t, word)) else {
        return Vec::new();
    };
    let mut i = k + 1;
    while let Some((Tok::Word(w), _)) = toks.get(i) {
        if NOISE.contains(&w.to_ascii_uppercase().as_str()) {
            i += 1;
        } else {
            break;
        }
    }
    name_at(toks, i, default_db)
        .map(|(t, _)| vec![t])
        .unwrap_or_default()
}

/// The first name after the leading keywords (INSERT/REPLACE … [INTO] name).
fn first_table(toks: &[(Tok, Range<usize>)], default_db: &str) -> Vec<TableRef> {
    let mut i = 1;
    while let Some((Tok::Word(w), _)) = toks.get(i) {
        if NOISE.contains(&w.to_ascii_uppercase().as_str()) {
            i += 1;
        } else {
            break;
        }
    }
    name_at(toks, i, default_db)
        .map(|(t, _)| vec![t])
        .unwrap_or_default()
}

/// A (possibly qualified) name starting at token `i`, and the index after it.
fn name_at(toks: &[(Tok, Range<usize>)], i: usize, default_db: &str) -> Option<(TableRef, usize)> {
    let part = |j: usize| match toks.get(j).map(|(t, _)| t) {
        Some(Tok::Word(w)) => Some(w.clone()),
        Some(Tok::Quoted(q)) => Some(q.clone()),
        _ => None,
    };
    let first = part(i)?;
    if let (Some((Tok::Punct('.'), _)), Some(second)) = (toks.get(i + 1), part(i + 2)) {
        return Some(((first, second), i + 3));
    }
    Some(((default_db.to_string(), first), i + 1))
}

/// Every name that follows one of the `after` keywords (or punctuation),
/// at the top level, until one of the `stop` words.
fn table_names_after(
    toks: &[(Tok, Range<usize>)],
    after: &[&str],
    default_db: &str,
    stop: &[&str],
) -> Vec<TableRef> {
    let mut out: Vec<TableRef> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i].0;
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Word(w) if depth == 0 && stop.iter().any(|s| w.eq_ignore_ascii_case(s)) => break,
            _ => {}
        }
        let is_after = depth == 0
            && match t {
                Tok::Word(w) => after.iter().any(|a| w.eq_ignore_ascii_case(a)),
                Tok::Punct(c) => after.iter().any(|a| a.len() == 1 && a.starts_with(*c)),
                _ => false,
            };
        i += 1;
        if !is_after {
            continue;
        }
        // Skip IF [NOT] EXISTS and the like.
        while let Some((Tok::Word(w), _)) = toks.get(i) {
            if NOISE.contains(&w.to_ascii_uppercase().as_str()) || w.eq_ignore_ascii_case("TABLE") {
                i += 1;
            } else {
                break;
            }
        }
        // `DELETE FROM`: the next keyword, not a name.
        if let Some((Tok::Word(w), _)) = toks.get(i) {
            if after.iter().any(|a| w.eq_ignore_ascii_case(a)) {
                continue;
            }
        }
        if let Some((name, next)) = name_at(toks, i, default_db) {
            if !out.contains(&name) {
                out.push(name);
            }
            i = next;
        }
    }
    out
}

/// Whether the statement writes rows (INSERT, UPDATE, DELETE, REPLACE, LOAD DATA).
pub(crate) fn is_dml(kind: &str) -> bool {
    matches!(kind, "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD")
}

/// `db.table` for the log.
pub(crate) fn show_tables(tables: &[TableRef]) -> String {
    tables
        .iter()
        .map(|(d, t)| format!("{d}.{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2";

    fn assert_masked(sql: &str) {
        let m = masked(sql, 1000);
        assert!(!m.contains(SECRET), "{sql}\n→ {m}");
        assert!(!m.contains("unter"), "{sql}\n→ {m}");
        assert!(m.contains("***"), "{sql}\n→ {m}");
    }

    #[test]
    fn masks_every_credential_form() {
        for sql in [
            "CREATE USER u IDENTIFIED BY 'hunter2'",
            "CREATE USER 'u'@'%' IDENTIFIED BY 'hunter2'",
            "create or replace user u@localhost identified by \"hunter2\"",
            "ALTER USER u IDENTIFIED BY 'hunter2'",
            "GRANT SELECT ON *.* TO u IDENTIFIED BY 'hunter2'",
            "GRANT SELECT ON *.* TO u IDENTIFIED BY PASSWORD '*hunter2'",
            "SET PASSWORD FOR u = PASSWORD('hunter2')",
            "SET PASSWORD = 'hunter2'",
            "SET PASSWORD FOR 'u'@'%' = '*hunter2'",
            "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('hunter2')",
            "CREATE USER u IDENTIFIED VIA mysql_native_password USING 'hunter2' OR unix_socket",
            "CREATE USER u IDENTIFIED WITH caching_sha2_password BY 'hunter2'",
            "CREATE USER u IDENTIFIED WITH mysql_native_password AS '*hunter2'",
            "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD 'hunter2', HOST 'h')",
            "ALTER SERVER s OPTIONS (PASSWORD 'hunter2')",
            "CHANGE MASTER TO MASTER_HOST='h', MASTER_PASSWORD='hunter2'",
            "CHANGE MASTER TO MASTER_PASSWORD = 'hunter2'",
            "CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD='hunter2'",
            "START SLAVE USER='r' PASSWORD='hunter2'",
            // Quoting tricks: the secret must not leak through an escaped quote.
            "CREATE USER u IDENTIFIED BY 'it''s hunter2'",
            "CREATE USER u IDENTIFIED BY 'it\\'s hunter2'",
            "CREATE USER u IDENTIFIED BY 'a\\\\' /* x */ , v IDENTIFIED BY 'hunter2'",
            "CREATE USER u IDENTIFIED BY \"say \"\"hunter2\"\"\"",
            "CREATE USER u /*!80000 IDENTIFIED BY 'hunter2' */",
            "CREATE USER u /* comment */ IDENTIFIED BY 'hunter2",
            "CREATE USER u IDENTIFIED BY _utf8mb4'hunter2'",
            "/* lead */ CREATE USER `we``ird` IDENTIFIED BY 'hunter2'",
            "ALTER USER u IDENTIFIED BY 'héhunter2é'",
        ] {
            assert_masked(sql);
        }
    }

    #[test]
    fn statements_without_credentials_are_kept() {
        let sql = "ALTER TABLE t ADD COLUMN c INT DEFAULT 5";
        assert_eq!(masked(sql, 1000), sql);
        assert_eq!(masked("ALTER TABLE t ADD c INT", 5), "ALTER…");
        // A password column is masked to be safe, but the structure stays.
        assert_eq!(
            masked("ALTER TABLE t ADD password VARCHAR(9) DEFAULT 'x'", 1000),
            "ALTER TABLE t ADD password VARCHAR(9) DEFAULT '***'"
        );
    }

    #[test]
    fn kinds_and_tables() {
        let s = |sql| summarize(sql, "shop");
        let t = |d: &str, n: &str| (d.to_string(), n.to_string());
        assert_eq!(
            s("ALTER TABLE users DROP COLUMN email"),
            Summary {
                kind: "ALTER TABLE".into(),
                tables: vec![t("shop", "users")]
            }
        );
        assert_eq!(
            s("/* c */ alter online table `other`.`we``ird` add x int").tables,
            vec![t("other", "we`ird")]
        );
        assert_eq!(
            s("CREATE TABLE IF NOT EXISTS a (id INT, b INT, FOREIGN KEY (b) REFERENCES c (id))"),
            Summary {
                kind: "CREATE TABLE".into(),
                tables: vec![t("shop", "a")]
            }
        );
        assert_eq!(
            s("CREATE OR REPLACE TEMPORARY TABLE a LIKE b").kind,
            "CREATE TABLE"
        );
        assert_eq!(
            s("DROP TABLE IF EXISTS a, x.b /* generated by server */").tables,
            vec![t("shop", "a"), t("x", "b")]
        );
        assert_eq!(
            s("RENAME TABLE users TO users_old, users_new TO users").tables,
            vec![
                t("shop", "users"),
                t("shop", "users_old"),
                t("shop", "users_new")
            ]
        );
        assert_eq!(s("TRUNCATE users").tables, vec![t("shop", "users")]);
        assert_eq!(s("TRUNCATE TABLE users").kind, "TRUNCATE TABLE");
        assert_eq!(
            s("CREATE UNIQUE INDEX i ON users (email)"),
            Summary {
                kind: "CREATE INDEX".into(),
                tables: vec![t("shop", "users")]
            }
        );
        assert_eq!(s("CREATE USER u IDENTIFIED BY 'x'").kind, "CREATE USER");
        assert!(s("CREATE USER u IDENTIFIED BY 'x'").tables.is_empty());
        assert_eq!(s("GRANT ALL ON *.* TO u").kind, "GRANT");
        assert_eq!(s("SET PASSWORD FOR u = 'x'").kind, "SET PASSWORD");
        assert_eq!(s("CHANGE MASTER TO MASTER_HOST='h'").kind, "CHANGE MASTER");
    }

    #[test]
    fn dml_targets() {
        let s = |sql| summarize(sql, "shop");
        let t = |d: &str, n: &str| (d.to_string(), n.to_string());
        assert_eq!(
            s("INSERT INTO users VALUES (1)").tables,
            vec![t("shop", "users")]
        );
        assert_eq!(
            s("insert low_priority ignore into `x`.users (a) select a from y").tables,
            vec![t("x", "users")]
        );
        assert_eq!(
            s("REPLACE users SET a = 1").tables,
            vec![t("shop", "users")]
        );
        assert_eq!(
            s("UPDATE users u JOIN orders o ON o.uid = u.id SET u.n = 1 WHERE o.x IN (SELECT 1 FROM z)")
                .tables,
            vec![t("shop", "users"), t("shop", "orders")]
        );
        assert_eq!(
            s("DELETE FROM users WHERE id IN (SELECT id FROM other)").tables,
            vec![t("shop", "users")]
        );
        assert_eq!(
            s("DELETE a, b FROM users a JOIN orders b ON a.id = b.uid").tables,
            vec![
                t("shop", "a"),
                t("shop", "b"),
                t("shop", "users"),
                t("shop", "orders")
            ]
        );
        assert_eq!(
            s("LOAD DATA INFILE 'f' INTO TABLE users").tables,
            vec![t("shop", "users")]
        );
        assert!(is_dml(&s("INSERT INTO users VALUES (1)").kind));
        assert!(!is_dml(&s("ALTER TABLE users ADD c INT").kind));
    }
}
