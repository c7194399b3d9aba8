//! `serve --breakers GLOB`: which breakers the console shows, scrapes and alerts on. A glob
//! has two wildcards, `*` (any run of bytes, empty included) and `?` (one byte); every other
//! byte stands for itself (breaker names are printable ASCII with no `*`, so a name cannot
//! hold a wildcard). Matched in time linear in the product of the lengths, with no recursion.

/// The globs given; none means every breaker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Globs(Vec<String>);

impl Globs {
    pub(crate) fn new(globs: &[String]) -> Globs {
        Globs(globs.to_vec())
    }

    /// Whether `name` matches one of the globs (any name when there are none).
    pub(crate) fn admit(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|g| matches(g.as_bytes(), name.as_bytes()))
    }
}

/// `--breakers`'s parser: a glob is 1-200 bytes (a name's limit) of printable ASCII.
pub(crate) fn parse(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 200 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected 1-200 printable ASCII bytes, with * and ? as wildcards".to_string());
    }
    Ok(value.to_string())
}

/// Whether `text` matches `glob`. On a mismatch after a `*`, the star takes one byte more and
/// the rest is tried again from there: only the last star needs remembering, as any earlier
/// star's choice can be absorbed by the later one.
fn matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    star = Some((sg, st + 1));
                    g = sg + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks_match_as_shells_do() {
        let yes = [
            ("payments", "payments"),
            ("pay*", "payments"),
            ("pay*", "pay"),
            ("*", ""),
            ("*", "anything"),
            ("*-db", "orders-db"),
            ("p?y", "pay"),
            ("*a*b*c*", "xxaxxbxxcxx"),
            ("a*b*c", "abbbc"),
            ("a*a*a", "aaa"),
            ("??", "ab"),
            ("*?", "a"),
            ("**x", "x"),
        ];
        for (glob, name) in yes {
            assert!(matches(glob.as_bytes(), name.as_bytes()), "{glob} should match {name}");
        }
        let no = [
            ("payments", "payment"),
            ("pay*", "pa"),
            ("pay*", "opay"),
            ("*-db", "orders-dbx"),
            ("p?y", "py"),
            ("??", "abc"),
            ("a*b*c", "abca"),
            ("*?", ""),
            ("", "a"),
        ];
        for (glob, name) in no {
            assert!(!matches(glob.as_bytes(), name.as_bytes()), "{glob} should not match {name}");
        }
    }

    #[test]
    fn a_pathological_glob_is_matched_without_blowing_up() {
        let glob = "a*".repeat(50) + "b";
        let name = "a".repeat(200);
        assert!(!matches(glob.as_bytes(), name.as_bytes()));
    }

    #[test]
    fn no_glob_admits_all_and_several_admit_any_match() {
        assert!(Globs::new(&[]).admit("x"));
        let g = Globs::new(&["pay*".into(), "orders".into()]);
        assert!(g.admit("payments") && g.admit("orders") && !g.admit("orders-db"));
        assert!(parse("").is_err() && parse("a b").is_err() && parse(&"a".repeat(201)).is_err());
        assert_eq!(parse("pay*"), Ok("pay*".to_string()));
    }
}
