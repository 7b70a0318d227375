//! The V2 JSON body: decoding an inference request into [`Tensor`]s and encoding the response.
//!
//! When `datatype` comes before `data` in an input (as every client we know writes it), `data` is parsed in the same
//! pass straight into a typed vector, flattening nested arrays as it goes; otherwise it is kept as raw JSON and parsed
//! once the datatype is known (a second pass over it cost a third of the JSON time in a profile of the dense model).
//! No `serde_json::Value` tree is built for the elements, and a bad element does not stop the parse: the first
//! problem is kept and reported with the input's name once the whole input is read.

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

struct RawInput<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: DataSlot<'a>,
}

/// An input's `data` as the first pass left it.
enum DataSlot<'a> {
    /// No `data` key.
    Absent,
    /// Seen before `datatype` (or with an unknown one): parsed later.
    Raw(&'a RawValue),
    /// Parsed in the first pass with the declared datatype; `Err` holds the first bad element's message.
    Parsed(Result<TensorData, String>),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputField {
    Name,
    Shape,
    Datatype,
    Data,
    #[serde(other)]
    Other,
}

/// The most elements reserved up front from a declared shape; a lying shape cannot make the server allocate more.
const MAX_RESERVED_ELEMENTS: usize = 1 << 16;

impl<'de: 'a, 'a> Deserialize<'de> for RawInput<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InputVisitor(std::marker::PhantomData))
    }
}

struct InputVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InputVisitor<'a> {
    type Value = RawInput<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input object with name, shape, datatype and data")
    }

    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<RawInput<'a>, M::Error> {
        let (mut name, mut shape, mut datatype): (Option<String>, Option<Vec<u64>>, Option<String>) =
            (None, None, None);
        let mut data = DataSlot::Absent;
        while let Some(field) = map.next_key::<InputField>()? {
            match field {
                InputField::Name => name = Some(map.next_value()?),
                InputField::Shape => shape = Some(map.next_value()?),
                InputField::Datatype => datatype = Some(map.next_value()?),
                InputField::Data => {
                    let declared = datatype.as_deref().and_then(DataType::parse);
                    let reserve = shape.as_deref().and_then(element_count).unwrap_or(0).min(MAX_RESERVED_ELEMENTS);
                    data = match declared.and_then(|t| TensorData::with_capacity(t, reserve)) {
                        Some(mut elements) => {
                            let mut problem = None;
                            with_vec!(&mut elements, v => map.next_value_seed(Flatten { into: v, problem: &mut problem }))?;
                            DataSlot::Parsed(problem.map_or(Ok(elements), Err))
                        }
                        None => DataSlot::Raw(map.next_value()?),
                    };
                }
                InputField::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(RawInput {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            data,
        })
    }
}

fn element_count(shape: &[u64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
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
    let expected = element_count(&raw.shape).ok_or_else(|| invalid(format!("shape {shape:?} is too large")))?;
    let elements = match raw.data {
        DataSlot::Absent => return Err(invalid("has no 'data'".to_owned())),
        DataSlot::Parsed(parsed) => parsed.map_err(&invalid)?,
        DataSlot::Raw(data) => {
            let mut elements =
                TensorData::with_capacity(datatype, expected.min(MAX_RESERVED_ELEMENTS)).ok_or_else(|| {
                    invalid(format!("{datatype} has no JSON form; send it with the binary tensor extension"))
                })?;
            parse_elements(data, &mut elements).map_err(|e| invalid(e.to_string()))?.map_err(&invalid)?;
            elements
        }
    };
    let got = elements.len();
    if got != expected {
        return Err(ApiError::ElementCount { input: raw.name, shape, expected, got });
    }
    Ok(Tensor { name: raw.name, shape, data: elements })
}

/// Parses raw `data` into `into`; the outer error is malformed JSON, the inner one the first bad element.
fn parse_elements(data: &RawValue, into: &mut TensorData) -> Result<Result<(), String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(data.get());
    let mut problem = None;
    with_vec!(into, v => Flatten { into: v, problem: &mut problem }.deserialize(&mut de))?;
    Ok(problem.map_or(Ok(()), Err))
}

/// Appends the elements of a (possibly nested) JSON array to a vector, checking each against the datatype. A bad
/// element is not appended; the first one's message is kept in `problem`, and the rest of the array is still read
/// so the JSON around it parses normally.
struct Flatten<'v, T> {
    into: &'v mut Vec<T>,
    problem: &'v mut Option<String>,
}

impl<T> Flatten<'_, T> {
    fn push(&mut self, element: Result<T, String>) {
        match element {
            Ok(value) => self.into.push(value),
            Err(message) => {
                self.problem.get_or_insert(message);
            }
        }
    }
}

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
        while seq.next_element_seed(Flatten { into: &mut *self.into, problem: &mut *self.problem })?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v));
        Ok(())
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.push(Err(format!("expected {}, found null", T::expected())));
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        self.push(Err(format!("expected {}, found an object", T::expected())));
        Ok(())
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
