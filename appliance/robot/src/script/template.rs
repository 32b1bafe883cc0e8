//! `{{name}}` templates in `say` texts and `set` values: parsed once at load (so a broken
//! template is refused with the step that holds it) and filled from the call's variables.
//!
//! Owns only the template syntax. Must not: decide where variables come from (the
//! interpreter does).

use std::collections::BTreeMap;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(String),
}

/// A parsed template: literal text with `{{variable}}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Whether `name` may name a variable: ASCII letters, digits and `_`, 1 to 64 characters,
/// not starting with a digit.
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!(
                    "`{{{{` at byte {} is never closed",
                    text.len() - rest.len() + open
                )
            })?;
            let name = after[..close].trim();
            if !is_variable_name(name) {
                return Err(format!(
                    "`{{{{{}}}}}` is not a variable name (letters, digits and _)",
                    &after[..close]
                ));
            }
            pieces.push(Piece::Variable(name.to_owned()));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err("`}}` without a matching `{{`".to_owned());
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The variables the template reads, in order of appearance.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Variable(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Fills the holes from `vars`; a variable with no value reads as the empty string.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Variable(v) => out.push_str(vars.get(v).map_or("", String::as_str)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_filled_and_missing_ones_read_empty() {
        let t = Template::parse("Hello {{first_name}}, your code is {{ code }}.{{none}}").unwrap();
        assert_eq!(
            t.variables().collect::<Vec<_>>(),
            ["first_name", "code", "none"]
        );
        let vars = BTreeMap::from([
            ("first_name".to_owned(), "Ada".to_owned()),
            ("code".to_owned(), "42".to_owned()),
        ]);
        assert_eq!(t.render(&vars), "Hello Ada, your code is 42.");
    }

    #[test]
    fn broken_templates_are_refused_with_the_reason() {
        assert!(Template::parse("Hi {{name")
            .unwrap_err()
            .contains("never closed"));
        assert!(Template::parse("Hi {{na-me}}")
            .unwrap_err()
            .contains("not a variable name"));
        assert!(Template::parse("Hi name}}")
            .unwrap_err()
            .contains("without"));
        assert!(Template::parse("Hi {{}}").is_err());
    }

    #[test]
    fn variable_names_are_identifiers() {
        assert!(is_variable_name("first_name"));
        assert!(is_variable_name("_x1"));
        assert!(!is_variable_name("1x"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("a b"));
    }
}
