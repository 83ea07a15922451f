//! A bound on what a definition's YAML expands to.
//!
//! YAML aliases let a few bytes stand for a large tree (`*steps` repeated,
//! aliases of aliases): a definition under the size limit could expand to
//! gigabytes before any check of ours ran. [`within`] walks the document once,
//! counting every value it would produce, aliases expanded, and stops at the
//! first one over [`VALUES_MAX`], before anything is built.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Most values (scalars, sequences, mappings) a definition may expand to.
pub const VALUES_MAX: usize = 100_000;

/// `Ok` when the YAML `text` expands to at most [`VALUES_MAX`] values, else
/// why not. YAML that does not parse passes: the parse that follows reports
/// it, with where.
pub(super) fn within(text: &str) -> Result<(), String> {
    let seen = Cell::new(0);
    for document in yaml_serde::Deserializer::from_str(text) {
        // Stops at the first value over the budget, or at bad YAML.
        if (Counter { seen: &seen }).deserialize(document).is_err() {
            break;
        }
    }
    if seen.get() > VALUES_MAX {
        Err(format!("expands to over {VALUES_MAX} values (YAML aliases?)"))
    } else {
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Counter<'a> {
    seen: &'a Cell<usize>,
}

impl Counter<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        let n = self.seen.get() + 1;
        self.seen.set(n);
        if n > VALUES_MAX { Err(E::custom("too many values")) } else { Ok(()) }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.count()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.count()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.count()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.count()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.count()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): count the tag and walk what it tags.
        self.count()?;
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_definitions_pass() {
        assert_eq!(within("name: a\nsteps: [1, 2, {x: y}]\n"), Ok(()));
        assert_eq!(within("::: not yaml"), Ok(()), "bad YAML is the parser's to report");
    }

    #[test]
    fn an_alias_bomb_is_stopped_early() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let prev = (b'a' + level - 1) as char;
            let this = (b'a' + level) as char;
            let refs = vec![format!("*{prev}"); 10].join(", ");
            text.push_str(&format!("{this}: &{this} [{refs}]\n"));
        }
        let e = within(&text).unwrap_err();
        assert!(e.contains("expands to over"), "{e}");
    }

    #[test]
    fn many_aliases_of_one_large_anchor_are_stopped() {
        let items = vec!["x"; 1_000].join(", ");
        let refs = vec!["*big"; 1_000].join(", ");
        let text = format!("big: &big [{items}]\nall: [{refs}]\n");
        assert!(within(&text).is_err());
    }
}
