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
    /// Which outputs go back in the binary tensor extension's raw layout.
    pub binary: BinaryOutputs,
}

/// Which outputs the client wants as raw bytes after the JSON header: request-level `binary_data_output`, overridden
/// per output by its `binary_data` parameter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BinaryOutputs {
    /// `parameters.binary_data_output`.
    pub default: bool,
    /// Outputs with their own `binary_data`.
    pub overrides: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// Whether output `name` is sent raw.
    pub fn wants(&self, name: &str) -> bool {
        self.overrides.iter().find(|(n, _)| n == name).map_or(self.default, |(_, b)| *b)
    }
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
    /// `parameters.binary_data_size`: the input's bytes follow the JSON header.
    binary_size: Option<u64>,
}

/// The input parameters Vane reads; others are accepted and ignored.
#[derive(Deserialize)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
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
    Parameters,
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
        let mut binary_size = None;
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
                InputField::Parameters => {
                    binary_size = map.next_value::<Option<InputParameters>>()?.and_then(|p| p.binary_data_size);
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
            binary_size,
        })
    }
}

fn element_count(shape: &[u64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Decodes a request body. With the model's `signature`, an input whose datatype differs from the model's is refused
/// before its data is parsed, so the client hears about the datatype rather than about a value that does not fit it.
///
/// `header_length` is the `Inference-Header-Content-Length` header of the binary tensor extension: the body's first
/// `header_length` bytes are the JSON, and the inputs with a `binary_data_size` parameter take their bytes from the
/// rest, in order. `Some(0)` is Triton's raw binary request: the whole body is the one input's bytes, batch 1.
pub fn decode_request(
    body: &[u8],
    header_length: Option<usize>,
    signature: Option<&Signature>,
) -> Result<InferRequest, ApiError> {
    let (json, mut binary) = match header_length {
        None => (body, None),
        Some(0) => return decode_raw_request(body, signature),
        Some(n) if n > body.len() => {
            return Err(ApiError::InvalidBinary {
                message: format!("Inference-Header-Content-Length is {n} but the body has only {} bytes", body.len()),
            })
        }
        Some(n) => (&body[..n], Some(&body[n..])),
    };
    let raw: RawRequest<'_> = serde_json::from_slice(json).map_err(|e| invalid_json(&e, json))?;
    let inputs =
        raw.inputs.into_iter().map(|input| decode_input(input, signature, &mut binary)).collect::<Result<_, _>>()?;
    if let Some(rest) = binary.filter(|rest| !rest.is_empty()) {
        return Err(ApiError::InvalidBinary {
            message: format!(
                "{} bytes follow the JSON header beyond the inputs' binary_data_size; the sizes must add up to the \
                 body's length minus Inference-Header-Content-Length",
                rest.len()
            ),
        });
    }
    let flag = |parameters: Option<&serde_json::Map<String, serde_json::Value>>, name: &'static str| match parameters
        .and_then(|p| p.get(name))
    {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::InvalidParameter { name, message: "must be true or false" }),
    };
    let mut binary_outputs = BinaryOutputs {
        default: flag(raw.parameters.as_ref(), "binary_data_output")?.unwrap_or(false),
        overrides: Vec::new(),
    };
    let mut outputs = Vec::new();
    for output in raw.outputs.unwrap_or_default() {
        if output.parameters.as_ref().is_some_and(|p| p.contains_key("classification")) {
            return Err(ApiError::InvalidParameter {
                name: "classification",
                message: "the classification extension is not supported; ask for the scores and take the top k",
            });
        }
        if let Some(b) = flag(output.parameters.as_ref(), "binary_data")? {
            binary_outputs.overrides.push((output.name.clone(), b));
        }
        outputs.push(output.name);
    }
    let timeout = match raw.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => None,
        Some(value) => Some(Duration::from_micros(value.as_u64().ok_or(ApiError::InvalidParameter {
            name: "timeout",
            message: "must be a whole number of microseconds",
        })?)),
    };
    Ok(InferRequest { id: raw.id, inputs, outputs, timeout, binary: binary_outputs })
}

/// Triton's raw binary request: no JSON, the body is the bytes of the model's only input, as one row (or as many
/// elements as the bytes hold along the input's one variable dimension). Every output comes back binary.
fn decode_raw_request(body: &[u8], signature: Option<&Signature>) -> Result<InferRequest, ApiError> {
    let invalid = |message: String| ApiError::InvalidBinary { message };
    let Some([spec]) = signature.map(|s| s.inputs.as_slice()) else {
        return Err(invalid(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with exactly one input".to_owned(),
        ));
    };
    // The batch dimension is 1; any other variable dimension takes what the bytes hold.
    let mut shape: Vec<Option<usize>> = spec
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 0 && d < 0 { Some(1) } else { usize::try_from(d).ok() })
        .collect();
    let known: usize = shape.iter().flatten().product();
    let elements = match spec.datatype.size() {
        Some(size) => body.len() / size.max(1),
        None => count_raw_strings(body),
    };
    let unknown: Vec<usize> = (0..shape.len()).filter(|&i| shape[i].is_none()).collect();
    match unknown.as_slice() {
        [] => {}
        [i] if known > 0 && elements % known == 0 => shape[*i] = Some(elements / known),
        [_] => {
            return Err(invalid(format!(
                "{elements} elements do not fill input '{}' of shape {:?}",
                spec.name, spec.shape
            )))
        }
        _ => {
            return Err(invalid(format!(
                "input '{}' has shape {:?}: a raw binary request fits only inputs with at most one variable \
                 dimension besides the batch",
                spec.name, spec.shape
            )))
        }
    }
    let shape: Vec<usize> = shape.into_iter().flatten().collect();
    let expected = shape.iter().product();
    let data = TensorData::from_raw(spec.datatype, body, expected)
        .map_err(|message| ApiError::InvalidData { input: spec.name.clone(), message })?;
    Ok(InferRequest {
        id: None,
        inputs: vec![Tensor { name: spec.name.clone(), shape, data }],
        outputs: Vec::new(),
        timeout: None,
        binary: BinaryOutputs { default: true, overrides: Vec::new() },
    })
}

/// How many length-prefixed strings `raw` holds, counting a malformed tail as one more (from_raw names the problem).
fn count_raw_strings(mut raw: &[u8]) -> usize {
    let mut count = 0;
    while let Some((length, tail)) = raw.split_first_chunk::<4>() {
        count += 1;
        raw = tail.get(u32::from_le_bytes(*length) as usize..).unwrap_or_default();
    }
    count + usize::from(!raw.is_empty())
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

fn decode_input(
    raw: RawInput<'_>,
    signature: Option<&Signature>,
    binary: &mut Option<&[u8]>,
) -> Result<Tensor, ApiError> {
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
    let elements = match (raw.data, raw.binary_size) {
        (DataSlot::Absent, None) => return Err(invalid("has no 'data'".to_owned())),
        (DataSlot::Absent, Some(size)) => {
            let Some(rest) = binary.as_mut() else {
                return Err(invalid(
                    "has binary_data_size but the request has no Inference-Header-Content-Length header".to_owned(),
                ));
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > rest.len() {
                return Err(invalid(format!(
                    "binary_data_size is {size} but only {} bytes of binary data are left for it",
                    rest.len()
                )));
            }
            let (bytes, tail) = rest.split_at(size);
            *rest = tail;
            TensorData::from_raw(datatype, bytes, expected).map_err(&invalid)?
        }
        (_, Some(_)) => return Err(invalid("has both 'data' and binary_data_size; send one".to_owned())),
        (DataSlot::Parsed(parsed), None) => parsed.map_err(&invalid)?,
        (DataSlot::Raw(data), None) => {
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

/// One output tensor in the response: its data inline, or (binary tensor extension) only its raw size, the bytes
/// following the JSON header in output order.
#[derive(Serialize)]
pub struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataJson<'a>>,
}

#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
}

struct DataJson<'a>(&'a TensorData);

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_vec!(self.0, v => v.serialize(serializer))
    }
}

impl<'a> OutputJson<'a> {
    /// The output with its data in the JSON.
    pub fn inline(tensor: &'a Tensor) -> Self {
        Self {
            name: &tensor.name,
            datatype: tensor.data.datatype().as_str(),
            shape: &tensor.shape,
            parameters: None,
            data: Some(DataJson(&tensor.data)),
        }
    }

    /// The output with its data raw after the header.
    pub fn binary(tensor: &'a Tensor) -> Self {
        Self {
            parameters: Some(OutputParameters { binary_data_size: tensor.data.raw_len() }),
            data: None,
            ..Self::inline(tensor)
        }
    }
}

/// The response body and, when some output is binary, the length of its JSON header (the value of
/// `Inference-Header-Content-Length`).
pub fn encode_response<'a>(
    response: &mut InferResponse<'a>,
    outputs: &'a [Tensor],
    binary: &BinaryOutputs,
) -> (Vec<u8>, Option<usize>) {
    let raw: Vec<&Tensor> = outputs.iter().filter(|t| binary.wants(&t.name)).collect();
    response.outputs = outputs
        .iter()
        .map(|t| if binary.wants(&t.name) { OutputJson::binary(t) } else { OutputJson::inline(t) })
        .collect();
    // Serialising our own response types cannot fail (string keys only).
    let mut body = serde_json::to_vec(&*response).unwrap_or_default();
    if raw.is_empty() {
        return (body, None);
    }
    let header = body.len();
    body.reserve(raw.iter().map(|t| t.data.raw_len()).sum());
    for tensor in raw {
        tensor.data.write_raw(&mut body);
    }
    (body, Some(header))
}

#[cfg(test)]
mod tests;
