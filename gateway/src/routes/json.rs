//! The V2 JSON body: decoding an inference request into [`Tensor`]s and encoding the response.
//!
//! `data` is kept as raw JSON until the input's `datatype` is known (it may come after `data` in the object), then
//! parsed once straight into a typed vector, flattening nested arrays as it goes. No `serde_json::Value` tree is
//! built for the elements.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::errors::ApiError;
use crate::infer::{with_vec, DataType, Signature, Tensor, TensorData};

/// A decoded inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// The inputs, in request order, each with a consistent shape and element count.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for by name; empty means all.
    pub outputs: Vec<String>,
    /// The client's deadline for the request (`parameters.timeout`, microseconds, as Triton reads it).
    pub timeout: Option<Duration>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    /// Any flat map is accepted; `timeout` is read.
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default, rename = "parameters")]
    _parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default, rename = "parameters")]
    _parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Decodes a request body. With the model's `signature`, an input whose datatype differs from the model's is refused
/// before its data is parsed, so the client hears about the datatype rather than about a value that does not fit it.
pub fn decode_request(body: &[u8], signature: Option<&Signature>) -> Result<InferRequest, ApiError> {
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| invalid_json(&e, body))?;
    let inputs = raw.inputs.into_iter().map(|input| decode_input(input, signature)).collect::<Result<_, _>>()?;
    let outputs = raw.outputs.unwrap_or_default().into_iter().map(|o| o.name).collect();
    let timeout = match raw.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => None,
        Some(value) => Some(Duration::from_micros(value.as_u64().ok_or(ApiError::InvalidParameter {
            name: "timeout",
            message: "must be a whole number of microseconds",
        })?)),
    };
    Ok(InferRequest { id: raw.id, inputs, outputs, timeout })
}

fn invalid_json(error: &serde_json::Error, body: &[u8]) -> ApiError {
    let mut message = error.to_string();
    if error.is_syntax() && has_non_finite_token(error, body) {
        message.push_str(" (NaN and Infinity are not JSON numbers, and V2 JSON has no form for them)");
    }
    ApiError::InvalidJson { message }
}

/// Whether the token where parsing stopped is `NaN` or `Infinity`, to say so in the error.
fn has_non_finite_token(error: &serde_json::Error, body: &[u8]) -> bool {
    let Some(line) = body.split(|&b| b == b'\n').nth(error.line().saturating_sub(1)) else {
        return false;
    };
    let at = error.column().saturating_sub(1).min(line.len());
    let rest = &line[at..];
    [b"NaN".as_slice(), b"Infinity", b"-Infinity"].iter().any(|token| rest.starts_with(token))
}

fn decode_input(raw: RawInput<'_>, signature: Option<&Signature>) -> Result<Tensor, ApiError> {
    let invalid = |message: String| ApiError::InvalidData { input: raw.name.clone(), message };
    let datatype = DataType::parse(&raw.datatype).ok_or_else(|| {
        let known: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
        invalid(format!("unknown datatype '{}'; V2 datatypes are {}", raw.datatype, known.join(", ")))
    })?;
    let declared = signature.and_then(|s| s.inputs.iter().find(|spec| spec.name == raw.name));
    if let Some(spec) = declared.filter(|spec| spec.datatype != datatype) {
        return Err(ApiError::DatatypeMismatch { input: raw.name, expected: spec.datatype, got: raw.datatype });
    }
    let shape: Vec<usize> = raw.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid(format!("shape {shape:?} is too large")))?;
    let data = raw.data.ok_or_else(|| invalid("has no 'data'".to_owned()))?;
    // Never trust the shape for the allocation: a number takes at least two bytes of JSON ("0,").
    let capacity = expected.min(data.get().len() / 2 + 1);
    let mut elements = TensorData::with_capacity(datatype, capacity)
        .ok_or_else(|| invalid(format!("{datatype} has no JSON form; send it with the binary tensor extension")))?;
    parse_elements(data, &mut elements).map_err(|e| invalid(e.to_string()))?;
    let got = elements.len();
    if got != expected {
        return Err(ApiError::ElementCount { input: raw.name, shape, expected, got });
    }
    Ok(Tensor { name: raw.name, shape, data: elements })
}

fn parse_elements(data: &RawValue, into: &mut TensorData) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(data.get());
    with_vec!(into, v => Flatten(v).deserialize(&mut de))
}

/// Appends the elements of a (possibly nested) JSON array to a vector, checking each against the datatype.
struct Flatten<'v, T>(&'v mut Vec<T>);

/// An element type that JSON scalars convert into.
trait Element: Sized {
    const DATATYPE: DataType;
    fn from_bool(_: bool) -> Result<Self, String> {
        Err(format!("expected {}, found a boolean", Self::expected()))
    }
    fn from_i64(_: i64) -> Result<Self, String> {
        Err(format!("expected {}, found a number", Self::expected()))
    }
    fn from_u64(_: u64) -> Result<Self, String> {
        Err(format!("expected {}, found a number", Self::expected()))
    }
    fn from_f64(_: f64) -> Result<Self, String> {
        Err(format!("expected {}, found a number", Self::expected()))
    }
    fn from_str(_: &str) -> Result<Self, String> {
        Err(format!("expected {}, found a string", Self::expected()))
    }
    fn expected() -> String {
        match Self::DATATYPE {
            DataType::Bool => "true or false (BOOL)".to_owned(),
            DataType::Bytes => "a string (BYTES)".to_owned(),
            other => format!("a number ({other})"),
        }
    }
}

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn from_bool(v: bool) -> Result<Self, String> {
        Ok(v)
    }
}

impl Element for String {
    const DATATYPE: DataType = DataType::Bytes;
    fn from_str(v: &str) -> Result<Self, String> {
        Ok(v.to_owned())
    }
}

macro_rules! integer_element {
    ($($t:ty => $dt:ident),*) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$dt;
            fn from_i64(v: i64) -> Result<Self, String> {
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range for {}", Self::DATATYPE))
            }
            fn from_u64(v: u64) -> Result<Self, String> {
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range for {}", Self::DATATYPE))
            }
            fn from_f64(v: f64) -> Result<Self, String> {
                Err(format!("expected an integer ({}), found {v}", Self::DATATYPE))
            }
        }
    )*};
}
integer_element!(u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64, i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64);

macro_rules! float_element {
    ($($t:ty => $dt:ident),*) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$dt;
            #[allow(clippy::cast_precision_loss)]
            fn from_i64(v: i64) -> Result<Self, String> {
                Ok(v as $t)
            }
            #[allow(clippy::cast_precision_loss)]
            fn from_u64(v: u64) -> Result<Self, String> {
                Ok(v as $t)
            }
            #[allow(clippy::cast_possible_truncation)]
            fn from_f64(v: f64) -> Result<Self, String> {
                let narrowed = v as $t;
                if narrowed.is_finite() { Ok(narrowed) } else { Err(format!("{v} is out of range for {}", Self::DATATYPE)) }
            }
        }
    )*};
}
float_element!(f32 => Fp32, f64 => Fp64);

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::expected())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(T::from_bool(v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(T::from_i64(v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(T::from_u64(v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(T::from_f64(v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(T::from_str(v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(format!("expected {}, found null", T::expected())))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format!("expected {}, found an object", T::expected())))
    }
}

/// The response body of a successful inference.
#[derive(Serialize)]
pub struct InferResponse<'a> {
    /// The model that answered.
    pub model_name: &'a str,
    /// The version that answered (the one actually used, also when the request named none).
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// The outputs.
    pub outputs: Vec<OutputJson<'a>>,
}

/// One output tensor in the response.
#[derive(Serialize)]
pub struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    data: DataJson<'a>,
}

struct DataJson<'a>(&'a TensorData);

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_vec!(self.0, v => v.serialize(serializer))
    }
}

impl<'a> From<&'a Tensor> for OutputJson<'a> {
    fn from(tensor: &'a Tensor) -> Self {
        Self {
            name: &tensor.name,
            datatype: tensor.data.datatype().as_str(),
            shape: &tensor.shape,
            data: DataJson(&tensor.data),
        }
    }
}

#[cfg(test)]
mod tests;
