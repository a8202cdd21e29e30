//! YAML (and JSON) parsing of operator input with bounded cost: a
//! transparent wrapper around `serde_yaml_ng`'s deserializer that charges
//! every value handed to the target type against a budget before the
//! target copies it. YAML aliases (`*a`) replay their anchor's content each
//! time they appear, so a 68 KB document whose 64 KiB anchor is aliased
//! 1,000 times would otherwise become 64 MB of owned strings (and more as
//! validation quotes them); `serde_yaml_ng` only caps the number of alias
//! jumps (100 per event of the document), not what they expand to.
//!
//! Two limits, checked while deserialising, before each value is copied:
//! * every string is at most [`MAX_STRING_BYTES`] (names, tags, globs and
//!   references are far shorter; validation then never quotes more);
//! * the document's content as deserialised (1 per value plus each
//!   string's bytes) is at most [`budget_for`] its size: [`EXPANSION_FACTOR`]
//!   times its bytes, at least [`MIN_BUDGET`]. Without aliases content is
//!   at most about twice the text, so only alias amplification reaches it.
//!
//! Errors are `serde_yaml_ng`'s, with the path and line of the value that
//! crossed the limit.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Longest string accepted anywhere in the document, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// How many times its own size a document may expand to through aliases.
pub const EXPANSION_FACTOR: usize = 4;
/// The budget of a small document (aliases in a short file stay usable).
pub const MIN_BUDGET: usize = 64 * 1024;

/// The content budget of a document of `len` bytes.
pub fn budget_for(len: usize) -> usize {
    MIN_BUDGET.max(len.saturating_mul(EXPANSION_FACTOR))
}

/// Parses one YAML (or JSON) document into `T` within the limits above.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_yaml_ng::Error> {
    let budget = Budget {
        limit: budget_for(text.len()),
        spent: Cell::new(0),
    };
    T::deserialize(Charged {
        inner: serde_yaml_ng::Deserializer::from_str(text),
        budget: &budget,
    })
}

/// What one document may still cost.
struct Budget {
    limit: usize,
    spent: Cell<usize>,
}

impl Budget {
    /// Charges one value with `bytes` bytes of string content.
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        if bytes > MAX_STRING_BYTES {
            return Err(E::custom(format_args!(
                "a string of {bytes} bytes is longer than the limit of {MAX_STRING_BYTES} bytes"
            )));
        }
        let spent = self.spent.get().saturating_add(1).saturating_add(bytes);
        self.spent.set(spent);
        if spent > self.limit {
            return Err(E::custom(format_args!(
                "the document expands to more than {} bytes of content \
                 ({EXPANSION_FACTOR} times its size, at least {MIN_BUDGET} bytes): \
                 too many YAML aliases (write the repeated parts out)",
                self.limit
            )));
        }
        Ok(())
    }
}

/// Whatever serde hands between the document and the target (the
/// deserializer, the target's visitor, seeds, sequence, map and enum
/// access), wrapped so that everything it hands on is wrapped too, and
/// each value is charged to the budget before the target's visitor sees
/// it. One type in every role: the roles are its trait impls below.
struct Charged<'b, T> {
    inner: T,
    budget: &'b Budget,
}

impl<'b, T> Charged<'b, T> {
    /// Another of serde's values, wrapped with the same budget.
    fn wrap<U>(&self, inner: U) -> Charged<'b, U> {
        Charged {
            inner,
            budget: self.budget,
        }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let v = self.wrap(visitor);
            self.inner.$method(v)
        }
    )*};
}

/// The deserializer: hands the target a charging visitor.
impl<'de, D: Deserializer<'de>> Deserializer<'de> for Charged<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_option deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_tuple(len, v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = self.wrap(visitor);
        self.inner.deserialize_enum(name, variants, v)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! charge_and_visit {
    ($($method:ident($ty:ty) $bytes:expr;)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.budget.charge::<E>($bytes(&v))?;
            self.inner.$method(v)
        }
    )*};
}

fn none<T>(_: &T) -> usize {
    0
}

/// The target's visitor, charging each value before passing it on.
impl<'de, V: Visitor<'de>> Visitor<'de> for Charged<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    charge_and_visit! {
        visit_bool(bool) none;
        visit_i8(i8) none;
        visit_i16(i16) none;
        visit_i32(i32) none;
        visit_i64(i64) none;
        visit_i128(i128) none;
        visit_u8(u8) none;
        visit_u16(u16) none;
        visit_u32(u32) none;
        visit_u64(u64) none;
        visit_u128(u128) none;
        visit_f32(f32) none;
        visit_f64(f64) none;
        visit_char(char) none;
        visit_str(&str) |s: &&str| s.len();
        visit_borrowed_str(&'de str) |s: &&str| s.len();
        visit_string(String) String::len;
        visit_bytes(&[u8]) |s: &&[u8]| s.len();
        visit_borrowed_bytes(&'de [u8]) |s: &&[u8]| s.len();
        visit_byte_buf(Vec<u8>) Vec::len;
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.budget.charge::<E>(0)?;
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.budget.charge::<E>(0)?;
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let d = self.wrap(d);
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let d = self.wrap(d);
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.budget.charge::<A::Error>(0)?;
        let seq = self.wrap(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.budget.charge::<A::Error>(0)?;
        let map = self.wrap(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.budget.charge::<A::Error>(0)?;
        let data = self.wrap(data);
        self.inner.visit_enum(data)
    }
}

/// A seed: the target deserializes from the wrapped deserializer.
impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Charged<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        let d = self.wrap(d);
        self.inner.deserialize(d)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Charged<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Charged<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for Charged<'b, A> {
    type Error = A::Error;
    type Variant = Charged<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let seed = self.wrap(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Charged {
                inner: variant,
                budget: self.budget,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Charged<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let v = self.wrap(visitor);
        self.inner.tuple_variant(len, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let v = self.wrap(visitor);
        self.inner.struct_variant(fields, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{self, DesiredState, StateError};

    /// An IP set whose addresses are `anchor` once and `*a` `aliases` times.
    fn aliased_addrs(anchor: &str, aliases: usize) -> String {
        let mut doc =
            format!("firewall:\n  ip_sets:\n    - name: s\n      addrs: [&a \"{anchor}\"");
        doc.push_str(&", *a".repeat(aliases));
        doc.push_str("]\n");
        doc
    }

    fn parse_error(doc: &str) -> String {
        match state::parse(doc) {
            Err(StateError::Parse(m)) => m,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn a_long_anchor_aliased_many_times_is_refused_at_the_anchor() {
        // The report's document: 68 KB, a 64 KiB anchor aliased 1,000 times.
        let doc = aliased_addrs(&"A".repeat(64 * 1024), 1000);
        assert!(doc.len() < 70_000, "{}", doc.len());
        let e = parse_error(&doc);
        assert!(
            e.contains("a string of 65536 bytes is longer than the limit of 1024 bytes"),
            "{e}"
        );
        assert!(e.contains("firewall.ip_sets[0].addrs[0]"), "{e}");
        assert!(e.len() < 300, "the error is bounded: {e}");
    }

    #[test]
    fn alias_expansion_past_the_budget_is_refused() {
        // Strings under the length limit, aliased until the content is
        // 1 MB from a 5 KB document.
        let doc = aliased_addrs(&"B".repeat(1000), 1000);
        let e = parse_error(&doc);
        assert!(
            e.contains(&format!(
                "the document expands to more than {MIN_BUDGET} bytes of content"
            )),
            "{e}"
        );
        assert!(e.len() < 400, "the error is bounded: {e}");
    }

    #[test]
    fn aliased_collections_count_every_value() {
        // A 200-address list aliased by 1,000 IP sets: short strings only.
        let addrs: Vec<String> = (0..200)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let mut doc = format!(
            "firewall:\n  ip_sets:\n    - {{name: s0, addrs: &a [{}]}}\n",
            addrs.join(", ")
        );
        for i in 1..=1000 {
            doc.push_str(&format!("    - {{name: s{i}, addrs: *a}}\n"));
        }
        let e = parse_error(&doc);
        assert!(e.contains("the document expands to more than"), "{e}");
        assert!(
            e.contains(&format!("{} bytes", budget_for(doc.len()))),
            "{e}"
        );
    }

    #[test]
    fn aliases_within_the_budget_still_work() {
        let with_aliases = r#"
switches:
  - {name: web-ls, tag: web, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
firewall:
  groups:
    - {name: web, match: {switch: web-ls}}
  sections:
    - name: s
      applied_to: &to [web]
      rules:
        - {id: 1, sources: &src [10.0.0.0/8, group:web], services: &svc [{protocol: tcp, port: 22}], action: accept}
        - {id: 2, sources: *src, services: *svc, action: drop, applied_to: *to}
"#;
        let written_out = with_aliases
            .replace("&to ", "")
            .replace("&src ", "")
            .replace("&svc ", "")
            .replace("*src", "[10.0.0.0/8, group:web]")
            .replace("*svc", "[{protocol: tcp, port: 22}]")
            .replace("*to", "[web]");
        let a = state::parse_and_validate(with_aliases).expect("valid with aliases");
        assert_eq!(a, state::parse(&written_out).expect("valid written out"));
    }

    #[test]
    fn the_wrapper_is_transparent() {
        let plain = |t: &str| {
            serde_yaml_ng::from_str::<Option<DesiredState>>(t)
                .expect("parses")
                .unwrap_or_default()
        };
        let sample = include_str!("../state.sample.yaml");
        // The commented firewall example switched on, as state.rs's tests do.
        let with_fw: String = sample
            .lines()
            .scan(false, |on, line| {
                *on |= line == "# firewall:";
                Some(if *on {
                    line.strip_prefix("# ")
                        .or_else(|| line.strip_prefix('#'))
                        .unwrap_or(line)
                        .to_string()
                } else {
                    line.to_string()
                })
            })
            .collect::<Vec<_>>()
            .join("\n");
        for t in [sample, &with_fw, "", "{}", "{\"switches\": []}"] {
            assert_eq!(state::parse(t).expect("parses"), plain(t), "{t}");
        }
        assert!(
            state::parse(&with_fw)
                .expect("parses")
                .firewall
                .is_some_and(|f| !f.sections.is_empty())
        );
        // Errors keep serde_yaml_ng's text.
        let bad = "switches: []\nbogus: 1\n";
        let e = parse_error(bad);
        let want = serde_yaml_ng::from_str::<Option<DesiredState>>(bad)
            .expect_err("unknown field")
            .to_string();
        assert_eq!(e, want);
    }
}
