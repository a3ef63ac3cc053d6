//! How values become object bytes and back.
//!
//! Values are encoded with serde and postcard behind a small header that names the
//! type, so reading an object as the wrong type is a clear error instead of garbage
//! (postcard is not self-describing). Vectors of plain numbers skip serde: they are
//! written as one raw little-endian block, so `put` and `get` of large arrays run
//! at memory bandwidth instead of element by element.
//!
//! Object refs serialized inside a value are collected while encoding, so the
//! runtime knows which objects the new object keeps alive.

use ray_abi::{ObjectId, RayError};
use serde::{Serialize, de::DeserializeOwned};
use std::any::{Any, TypeId};
use std::cell::RefCell;

const MAGIC: u8 = 0xA7;
const FORMAT_POSTCARD: u8 = 0;
const FORMAT_RAW: u8 = 1;
/// Raw payloads start on this alignment within the object, so they can be viewed
/// in place from shared memory.
const RAW_ALIGN: usize = 64;

thread_local! {
    static CONTAINED: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
}

/// Records a ref serialized inside the value being encoded on this thread.
pub(crate) fn note_contained(id: ObjectId) {
    CONTAINED.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(id);
        }
    });
}

/// An encoded value: a header and a payload, kept apart so a raw payload is
/// copied only once, straight into its destination.
pub struct Encoded<'a> {
    pub(crate) header: Vec<u8>,
    pub(crate) payload: std::borrow::Cow<'a, [u8]>,
    pub(crate) contained: Vec<ObjectId>,
}

impl Encoded<'_> {
    /// The parts to concatenate.
    pub(crate) fn parts(&self) -> [&[u8]; 2] {
        [&self.header, &self.payload]
    }

    /// The whole encoding as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.header.len() + self.payload.len());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.payload);
        v
    }
}

/// A type's name without module paths: `alloc::vec::Vec<my_crate::Row>` becomes
/// `Vec<Row>`. Cell libraries get a new crate name each time, so full paths of the
/// same type differ between cells; short names do not.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let flush = |segment: &mut String, out: &mut String| {
        let last = segment.rsplit("::").next().unwrap_or("");
        out.push_str(last);
        segment.clear();
    };
    for ch in full.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            segment.push(ch);
        } else {
            flush(&mut segment, &mut out);
            out.push(ch);
        }
    }
    flush(&mut segment, &mut out);
    out
}

fn header(format: u8, type_name: &str) -> Vec<u8> {
    let name = type_name.as_bytes();
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX) as usize;
    let mut h = Vec::with_capacity(4 + name_len + RAW_ALIGN);
    h.push(MAGIC);
    h.push(format);
    h.extend_from_slice(&(name_len as u16).to_le_bytes());
    h.extend_from_slice(&name[..name_len]);
    if format == FORMAT_RAW {
        let padded = h.len().div_ceil(RAW_ALIGN) * RAW_ALIGN;
        h.resize(padded, 0);
    }
    h
}

macro_rules! raw_types {
    ($m:ident) => {
        $m!(u8);
        $m!(i8);
        $m!(u16);
        $m!(i16);
        $m!(u32);
        $m!(i32);
        $m!(u64);
        $m!(i64);
        $m!(f32);
        $m!(f64);
    };
}

fn raw_bytes<T: Any>(value: &T) -> Option<&[u8]> {
    let any = value as &dyn Any;
    macro_rules! try_vec {
        ($t:ty) => {
            if let Some(v) = any.downcast_ref::<Vec<$t>>() {
                return Some(bytemuck::cast_slice(v.as_slice()));
            }
        };
    }
    raw_types!(try_vec);
    None
}

fn is_raw<T: Any>() -> bool {
    macro_rules! check {
        ($t:ty) => {
            if TypeId::of::<T>() == TypeId::of::<Vec<$t>>() {
                return true;
            }
        };
    }
    raw_types!(check);
    false
}

fn raw_decode<T: Any>(payload: &[u8]) -> Option<Result<T, String>> {
    macro_rules! try_vec {
        ($t:ty) => {
            if TypeId::of::<T>() == TypeId::of::<Vec<$t>>() {
                let size = std::mem::size_of::<$t>();
                if payload.len() % size != 0 {
                    return Some(Err(format!("{} bytes is not a whole number of elements", payload.len())));
                }
                let v: Vec<$t> = bytemuck::pod_collect_to_vec(payload);
                let boxed: Box<dyn Any> = Box::new(v);
                return Some(Ok(*boxed.downcast::<T>().expect("TypeId matched")));
            }
        };
    }
    raw_types!(try_vec);
    None
}

/// Encodes a value, collecting the refs nested in it.
pub fn encode<T: Serialize + Any>(value: &T) -> Result<Encoded<'_>, RayError> {
    let type_name = short_type_name(std::any::type_name::<T>());
    if let Some(raw) = raw_bytes(value) {
        return Ok(Encoded {
            header: header(FORMAT_RAW, &type_name),
            payload: std::borrow::Cow::Borrowed(raw),
            contained: Vec::new(),
        });
    }
    let previous = CONTAINED.with(|c| c.borrow_mut().replace(Vec::new()));
    let result = postcard::to_stdvec(value);
    let contained = CONTAINED.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous)).unwrap_or_default();
    let payload = result.map_err(|e| RayError::Encode { type_name: type_name.clone(), detail: e.to_string() })?;
    Ok(Encoded { header: header(FORMAT_POSTCARD, &type_name), payload: payload.into(), contained })
}

/// Decodes an object's bytes as `T`, checking the stored type name first.
pub fn decode<T: DeserializeOwned + Any>(bytes: &[u8], object: &dyn std::fmt::Display) -> Result<T, RayError> {
    let requested = short_type_name(std::any::type_name::<T>());
    let corrupt = |detail: &str| RayError::Decode { type_name: requested.clone(), detail: detail.to_string() };
    if bytes.len() < 4 || bytes[0] != MAGIC {
        return Err(corrupt("not a ray object (bad header)"));
    }
    let format = bytes[1];
    let name_len = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
    let name_end = 4 + name_len;
    let stored = bytes.get(4..name_end).ok_or_else(|| corrupt("truncated header"))?;
    let stored = String::from_utf8_lossy(stored);
    if stored != requested {
        return Err(RayError::TypeMismatch { object: object.to_string(), stored: stored.into_owned(), requested });
    }
    match format {
        FORMAT_RAW => {
            let start = name_end.div_ceil(RAW_ALIGN) * RAW_ALIGN;
            let payload = bytes.get(start..).ok_or_else(|| corrupt("truncated raw payload"))?;
            match raw_decode::<T>(payload) {
                Some(r) => r.map_err(|d| corrupt(&d)),
                None => Err(corrupt("raw payload for a non-raw type")),
            }
        }
        FORMAT_POSTCARD => {
            if is_raw::<T>() {
                return Err(corrupt("postcard payload for a raw type"));
            }
            postcard::from_bytes(&bytes[name_end..]).map_err(|e| corrupt(&e.to_string()))
        }
        other => Err(corrupt(&format!("unknown format {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_names_drop_module_paths() {
        assert_eq!(short_type_name("alloc::vec::Vec<code_3::Row>"), "Vec<Row>");
        assert_eq!(short_type_name("(usize, alloc::string::String)"), "(usize, String)");
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(
            short_type_name("std::collections::hash::map::HashMap<u8, core::option::Option<i32>>"),
            "HashMap<u8, Option<i32>>"
        );
    }

    #[test]
    fn wrong_type_is_a_clear_error() {
        let e = encode(&42u64).unwrap().to_vec();
        match decode::<String>(&e, &"obj") {
            Err(RayError::TypeMismatch { stored, requested, .. }) => {
                assert_eq!(stored, "u64");
                assert_eq!(requested, "String");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
    }

    #[test]
    fn raw_vectors_use_the_raw_format() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let e = encode(&v).unwrap();
        assert_eq!(e.header[1], FORMAT_RAW);
        assert_eq!(e.header.len() % RAW_ALIGN, 0);
        assert_eq!(e.payload.len(), 8000);
        let back: Vec<f64> = decode(&e.to_vec(), &"obj").unwrap();
        assert_eq!(back, v);
        assert!(matches!(decode::<Vec<f32>>(&e.to_vec(), &"obj"), Err(RayError::TypeMismatch { .. })));
    }

    proptest! {
        #[test]
        fn postcard_values_round_trip(v in proptest::collection::vec((any::<u32>(), ".*"), 0..20)) {
            let e = encode(&v).unwrap().to_vec();
            let back: Vec<(u32, String)> = decode(&e, &"obj").unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn raw_values_round_trip(v in proptest::collection::vec(any::<i32>(), 0..500)) {
            let e = encode(&v).unwrap().to_vec();
            let back: Vec<i32> = decode(&e, &"obj").unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn truncated_bytes_never_panic(v in proptest::collection::vec(any::<u64>(), 0..50), cut in 0usize..600) {
            let e = encode(&v).unwrap().to_vec();
            let cut = cut.min(e.len());
            let _ = decode::<Vec<u64>>(&e[..cut], &"obj");
            let _ = decode::<String>(&e[..cut], &"obj");
        }
    }
}
