//! YAML values read as text, for the configuration file (`file.rs`, `file_tls.rs`).

use std::fmt;

use serde::Deserialize;
use serde::de::Visitor;

/// A YAML scalar read as text: `port: 30192` and `port: "30192"` mean the same.
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A list given either as a YAML sequence or as one comma-separated string.
#[derive(Debug, Clone)]
pub struct List(pub String);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: a value of neither form is refused with
        // what was expected and where, not "did not match any variant".
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean, or a list of them")
            }
            fn visit_str<E>(self, v: &str) -> Result<List, E> {
                Ok(List(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<List, E> {
                Ok(List(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<List, E> {
                Ok(List(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<List, E> {
                Ok(List(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<List, E> {
                Ok(List(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut items = Vec::new();
                while let Some(Scalar(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List(items.join(",")))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}
