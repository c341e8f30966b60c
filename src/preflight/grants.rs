//! Reading `SHOW GRANTS` output: a small tokenizer and parser for the
//! `GRANT … ON … TO …` and `GRANT role TO …` lines of MySQL and MariaDB,
//! and the question "does this account have privilege P on object O".
//!
//! Never print a grant line: MariaDB appends `IDENTIFIED BY PASSWORD '<hash>'`.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Unquoted word (keyword, privilege word, `*`, unquoted name).
    Word(String),
    /// `` `name` ``
    Quoted(String),
    /// `'text'` or `"text"`
    Str(String),
    Punct(char),
}

fn tokenize(line: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '`' || c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                if d == c {
                    if chars.get(i + 1) == Some(&c) {
                        s.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                if d == '\\' && c != '`' && i + 1 < chars.len() {
                    s.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                s.push(d);
                i += 1;
            }
            out.push(if c == '`' {
                Tok::Quoted(s)
            } else {
                Tok::Str(s)
            });
        } else if ",.()@;".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !",.()@;`'\"".contains(chars[i]) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        }
    }
    out
}

/// What a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `*.*`
    Global,
    /// `db.*` (the name may hold `%`/`_` wildcards).
    Db(String),
    /// `db.table`
    Table(String, String),
    /// Routines, proxies, column lists: not what pikachu needs.
    Other,
}

/// An account or a role: `name` and, for accounts (and MySQL roles), `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub name: String,
    pub host: Option<String>,
}

impl Name {
    /// `` `name`@`host` `` or `` `name` ``, for SQL.
    pub fn sql(&self) -> String {
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        match &self.host {
            Some(h) => format!("{}@{}", q(&self.name), q(h)),
            None => q(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `GRANT p1, p2 ON object TO grantee`; privileges upper-case, single
    /// spaces (`REPLICATION SLAVE`); column-level ones left out.
    Privileges {
        privileges: Vec<String>,
        object: Object,
        grantee: Name,
    },
    /// `GRANT role1, role2 TO grantee`
    Roles { roles: Vec<Name>, grantee: Name },
}

fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word(x) if x.eq_ignore_ascii_case(w))
}

fn ident(t: &Tok) -> Option<String> {
    match t {
        Tok::Word(s) | Tok::Quoted(s) | Tok::Str(s) => Some(s.clone()),
        Tok::Punct(_) => None,
    }
}

/// `name [@ host]` at the start of `toks`; returns it and the tokens used.
fn parse_name(toks: &[Tok]) -> Option<(Name, usize)> {
    let name = ident(toks.first()?)?;
    if toks.get(1) == Some(&Tok::Punct('@')) {
        let host = ident(toks.get(2)?)?;
        return Some((
            Name {
                name,
                host: Some(host),
            },
            3,
        ));
    }
    Some((Name { name, host: None }, 1))
}

fn split_commas(toks: &[Tok]) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

fn parse_object(toks: &[Tok]) -> Object {
    let first = match toks.first() {
        Some(t) => t,
        None => return Object::Other,
    };
    if ["PROCEDURE", "FUNCTION", "PACKAGE"]
        .iter()
        .any(|w| is_word(first, w))
        || toks.contains(&Tok::Punct('@'))
    {
        return Object::Other;
    }
    match toks {
        [a, Tok::Punct('.'), b] => match (ident(a), ident(b)) {
            (Some(a), Some(b)) if a == "*" && b == "*" && matches!(toks[0], Tok::Word(_)) => {
                Object::Global
            }
            (Some(db), Some(t)) if t == "*" && matches!(toks[2], Tok::Word(_)) => Object::Db(db),
            (Some(db), Some(t)) => Object::Table(db, t),
            _ => Object::Other,
        },
        _ => Object::Other,
    }
}

/// Parses one line of `SHOW GRANTS`; `None` for lines that grant nothing
/// we read (`SET DEFAULT ROLE …`, `REVOKE …`, unknown shapes).
pub fn parse(line: &str) -> Option<Grant> {
    let toks = tokenize(line);
    if !is_word(toks.first()?, "GRANT") {
        return None;
    }
    let rest = &toks[1..];
    let mut depth = 0i32;
    let mut on = None;
    let mut to = None;
    for (i, t) in rest.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            _ if depth == 0 && on.is_none() && to.is_none() && is_word(t, "ON") => on = Some(i),
            _ if depth == 0 && is_word(t, "TO") => {
                to = Some(i);
                break;
            }
            _ => {}
        }
    }
    let to = to?;
    let (grantee, _) = parse_name(&rest[to + 1..])?;
    match on {
        Some(on) => {
            let mut privileges = Vec::new();
            for part in split_commas(&rest[..on]) {
                if part.contains(&Tok::Punct('(')) {
                    continue; // column-level
                }
                let words: Vec<String> = part
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(w) => Some(w.to_ascii_uppercase()),
                        _ => None,
                    })
                    .collect();
                if !words.is_empty() && words.len() == part.len() {
                    privileges.push(words.join(" "));
                }
            }
            Some(Grant::Privileges {
                privileges,
                object: parse_object(&rest[on + 1..to]),
                grantee,
            })
        }
        None => {
            let mut roles = Vec::new();
            for part in split_commas(&rest[..to]) {
                let (name, used) = parse_name(part)?;
                if used != part.len() {
                    return None;
                }
                roles.push(name);
            }
            Some(Grant::Roles { roles, grantee })
        }
    }
}

/// `LIKE`-style match of a database-level grant name (`%`, `_`, `\` escapes).
pub(crate) fn like_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('%') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('_') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The privileges in effect, from all grant lines read.
#[derive(Debug, Default)]
pub(crate) struct Effective {
    global: HashSet<String>,
    db: Vec<(String, HashSet<String>)>,
    table: Vec<((String, String), HashSet<String>)>,
    /// Roles granted straight to the account (active or not).
    pub roles_of_user: Vec<Name>,
}

impl Effective {
    pub fn add(&mut self, grant: Grant, user: &Name) {
        match grant {
            Grant::Privileges {
                privileges, object, ..
            } => {
                let set: HashSet<String> = privileges.into_iter().collect();
                match object {
                    Object::Global => self.global.extend(set),
                    Object::Db(d) => self.db.push((d, set)),
                    Object::Table(d, t) => self.table.push(((d, t), set)),
                    Object::Other => {}
                }
            }
            Grant::Roles { roles, grantee } => {
                if grantee.name == user.name
                    && (grantee.host.is_none() || grantee.host == user.host)
                {
                    self.roles_of_user.extend(roles);
                }
            }
        }
    }

    /// A global privilege, under any of its spellings (or ALL PRIVILEGES).
    pub(crate) fn has_global(&self, spellings: &[&str]) -> bool {
        has(&self.global, spellings)
    }

    /// SELECT on `db`.`table`: globally, on the database, or on the table.
    pub(crate) fn can_select(&self, db: &str, table: &str) -> bool {
        let s = ["SELECT"];
        has(&self.global, &s)
            || self
                .db
                .iter()
                .any(|(p, set)| like_match(p, db) && has(set, &s))
            || self
                .table
                .iter()
                .any(|((d, t), set)| d == db && t == table && has(set, &s))
    }
}

fn has(set: &HashSet<String>, spellings: &[&str]) -> bool {
    set.contains("ALL")
        || set.contains("ALL PRIVILEGES")
        || spellings.iter().any(|s| set.contains(*s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Name {
        Name {
            name: "u1".into(),
            host: Some("%".into()),
        }
    }

    #[test]
    fn mariadb_lines() {
        let g = parse("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `pikachu`@`%` IDENTIFIED BY PASSWORD '*4E49'").unwrap();
        assert_eq!(
            g,
            Grant::Privileges {
                privileges: vec![
                    "SELECT".into(),
                    "REPLICATION SLAVE".into(),
                    "BINLOG MONITOR".into()
                ],
                object: Object::Global,
                grantee: Name {
                    name: "pikachu".into(),
                    host: Some("%".into())
                },
            }
        );
        assert_eq!(
            parse("GRANT `r2` TO `r1`"),
            Some(Grant::Roles {
                roles: vec![Name {
                    name: "r2".into(),
                    host: None
                }],
                grantee: Name {
                    name: "r1".into(),
                    host: None
                }
            })
        );
        assert_eq!(parse("SET DEFAULT ROLE `r1` FOR `u1`@`%`"), None);
        let Some(Grant::Privileges { object, .. }) = parse("GRANT SELECT ON `db1`.* TO `u1`@`%`")
        else {
            panic!()
        };
        assert_eq!(object, Object::Db("db1".into()));
        let Some(Grant::Privileges { object, .. }) =
            parse("GRANT SELECT ON `db1`.`t``x` TO `u1`@`%`")
        else {
            panic!()
        };
        assert_eq!(object, Object::Table("db1".into(), "t`x".into()));
        // A database literally named `*` is not the global level.
        let Some(Grant::Privileges { object, .. }) = parse("GRANT SELECT ON `*`.* TO `u1`@`%`")
        else {
            panic!()
        };
        assert_eq!(object, Object::Db("*".into()));
    }

    #[test]
    fn mysql_lines() {
        let g = parse("GRANT SELECT, REPLICATION REPLICA ON *.* TO 'u1'@'%'").unwrap();
        let mut e = Effective::default();
        e.add(g, &user());
        assert!(e.has_global(&["REPLICATION SLAVE", "REPLICATION REPLICA"]));
        assert!(!e.has_global(&["REPLICATION CLIENT", "BINLOG MONITOR"]));
        assert!(e.can_select("any", "t"));
        let g = parse("GRANT `r1`@`%`,`r2`@`%` TO `u1`@`%`").unwrap();
        e.add(g, &user());
        assert_eq!(e.roles_of_user.len(), 2);
        assert_eq!(e.roles_of_user[0].sql(), "`r1`@`%`");
        // Dynamic privileges, no spaces.
        let Some(Grant::Privileges { privileges, .. }) =
            parse("GRANT BINLOG_ADMIN,REPLICATION_APPLIER ON *.* TO `root`@`localhost`")
        else {
            panic!()
        };
        assert_eq!(privileges, vec!["BINLOG_ADMIN", "REPLICATION_APPLIER"]);
    }

    #[test]
    fn column_routine_and_proxy_grants_give_nothing() {
        let mut e = Effective::default();
        for line in [
            "GRANT SELECT (`a`, `b`) ON `db`.`t` TO `u1`@`%`",
            "GRANT EXECUTE ON PROCEDURE `db`.`p` TO `u1`@`%`",
            "GRANT PROXY ON ''@'%' TO 'u1'@'%' WITH GRANT OPTION",
            "GRANT USAGE ON *.* TO `u1`@`%`",
        ] {
            e.add(parse(line).expect(line), &user());
        }
        assert!(!e.can_select("db", "t"));
        assert!(!e.has_global(&["REPLICATION SLAVE"]));
    }

    #[test]
    fn all_privileges_and_patterns() {
        let mut e = Effective::default();
        e.add(
            parse("GRANT ALL PRIVILEGES ON `app\\_%`.* TO `u1`@`%`").unwrap(),
            &user(),
        );
        assert!(e.can_select("app_1", "t"));
        assert!(!e.can_select("appx1", "t"));
        assert!(!e.has_global(&["REPLICATION SLAVE"]));
        e.add(
            parse("GRANT ALL PRIVILEGES ON *.* TO `u1`@`%` WITH GRANT OPTION").unwrap(),
            &user(),
        );
        assert!(e.has_global(&["REPLICATION SLAVE"]));
        assert!(like_match("a%c", "abbc"));
        assert!(like_match("a_c", "abc"));
        assert!(!like_match("a_c", "abbc"));
    }
}
