//! What the agent sees when a call pops: the customer's name, the masked number, the contact
//! fields and the campaign script with `{{variables}}` filled in from those fields.
//!
//! Must not: show a full phone number (only [`PhoneNumber::masked`]).

use callgate_common::phone::PhoneNumber;
use serde::Serialize;

/// The screen-pop of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScreenPop {
    /// The customer's name, from the `name` field (or `first_name` + `last_name`).
    pub customer: String,
    /// The masked number (`+44 207****1234`), or `withheld`.
    pub number: String,
    /// The contact's fields, in their order.
    pub fields: Vec<(String, String)>,
    /// The script with its variables filled in.
    pub script: String,
    /// Where the call comes from: the campaign's name or the inbound group's.
    pub source: String,
}

impl ScreenPop {
    /// The pop for a contact reached at `number` with `fields`, under `script`.
    pub fn new(
        source: &str,
        number: Option<&PhoneNumber>,
        fields: &[(String, String)],
        script: &str,
    ) -> ScreenPop {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let customer = match (get("name"), get("first_name"), get("last_name")) {
            (Some(n), _, _) => n.to_string(),
            (None, Some(f), Some(l)) => format!("{f} {l}"),
            (None, Some(x), None) | (None, None, Some(x)) => x.to_string(),
            (None, None, None) => "unknown caller".to_string(),
        };
        ScreenPop {
            customer,
            number: number.map_or_else(|| "withheld".to_string(), PhoneNumber::masked),
            fields: fields.to_vec(),
            script: fill_script(script, fields),
            source: source.to_string(),
        }
    }
}

/// Replaces every `{{ name }}` in `template` with the field of that name (case-insensitive);
/// a variable with no such field becomes `[name?]` so the agent sees what is missing. Text
/// that is not a complete `{{...}}` is kept as it is.
pub fn fill_script(template: &str, fields: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                match fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('[');
                        out.push_str(name);
                        out.push_str("?]");
                    }
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(String, String)> {
        vec![
            ("first_name".into(), "Ada".into()),
            ("last_name".into(), "Lovelace".into()),
            ("plan".into(), "Gold".into()),
        ]
    }

    #[test]
    fn variables_are_filled_from_fields_and_missing_ones_are_marked() {
        assert_eq!(
            fill_script(
                "Hello {{ First_Name }}, your {{plan}} plan, {{ref}}.",
                &fields()
            ),
            "Hello Ada, your Gold plan, [ref?]."
        );
        assert_eq!(fill_script("a {{ b", &fields()), "a {{ b");
        assert_eq!(fill_script("no vars", &[]), "no vars");
    }

    #[test]
    fn the_pop_masks_the_number_and_names_the_customer() {
        let n = PhoneNumber::parse("+442071234567", None).unwrap();
        let pop = ScreenPop::new("Spring sale", Some(&n), &fields(), "Hi {{first_name}}");
        assert_eq!(pop.customer, "Ada Lovelace");
        assert_eq!(pop.number, n.masked());
        assert!(!pop.number.contains("2071234567"));
        assert_eq!(pop.script, "Hi Ada");
        let anon = ScreenPop::new("Support", None, &[], "");
        assert_eq!(
            (anon.customer.as_str(), anon.number.as_str()),
            ("unknown caller", "withheld")
        );
    }
}
