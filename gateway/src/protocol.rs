//! The V2 JSON body: decoding an inference request into [`Tensor`]s and encoding the response.
//!
//! When `datatype` comes before `data` in an input (as every client we know writes it), `data` is parsed in the same
//! pass straight into a typed vector, flattening nested arrays as it goes; otherwise it is kept as raw JSON and parsed
//! once the datatype is known (a second pass over it cost a third of the JSON time in a profile of the dense model).
//! No `serde_json::Value` tree is built for the elements, and a bad element does not stop the parse: the first
//! problem is kept and reported with the input's name once the whole input is read.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::budget::{DECODE_FACTOR, DECODE_SLACK};
use crate::errors::ApiError;
use crate::infer::{with_vec, DataType, Shape, Signature, Tensor, TensorData, TensorSpec, Tensors};

/// A decoded inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// The inputs, in request order, each with a consistent shape and element count.
    pub inputs: Tensors,
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

impl InferRequest {
    /// The memory the decoded request holds: its tensors and its id.
    pub fn heap_bytes(&self) -> usize {
        self.inputs.iter().map(|t| t.data.heap_bytes() + t.name.len() + t.shape.len() * 8).sum::<usize>()
            + self.id.as_ref().map_or(0, String::len)
    }
}

impl BinaryOutputs {
    /// Whether output `name` is sent raw.
    pub fn wants(&self, name: &str) -> bool {
        self.overrides.iter().find(|(n, _)| n == name).map_or(self.default, |(_, b)| *b)
    }
}

/// The first pass over the JSON: the top level, with the inputs' data parsed as it goes where it can be.
struct RawRequest<'a> {
    id: Option<Cow<'a, str>>,
    /// Any map is accepted; `timeout` and `binary_data_output` are read, the rest skipped without being kept.
    parameters: Option<RequestParameters>,
    outputs: Option<Vec<RawOutput>>,
}

/// The request parameters Vane reads.
#[derive(Deserialize)]
struct RequestParameters {
    #[serde(default)]
    timeout: Option<Scalar>,
    #[serde(default)]
    binary_data_output: Option<Scalar>,
}

/// A parameter's value as far as Vane reads one: a boolean, a whole number, or anything else (skipped, not kept, so
/// a parameter cannot make the server build a large value tree).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Bool(bool),
    Unsigned(u64),
    Other,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Unsigned(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The most dimensions a shape may have (ONNX allows more; models served here have a handful).
pub const MAX_DIMENSIONS: usize = 32;

/// A JSON string borrowed from the body when it has no escapes (no allocation), owned when it has some.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// A JSON array read into a list `C` (a `Vec`, or a `SmallVec` for what is nearly always short) of at most `limit`
/// elements; past it the parse stops with [`ApiError::TooMany`].
struct BoundedSeq<'c, 's, C> {
    ctx: &'c Context<'s>,
    limit: usize,
    what: &'static str,
    detail: &'static str,
    list: std::marker::PhantomData<C>,
}

impl<'c, 's, C> BoundedSeq<'c, 's, C> {
    fn new(ctx: &'c Context<'s>, limit: usize, what: &'static str, detail: &'static str) -> Self {
        Self { ctx, limit, what, detail, list: std::marker::PhantomData }
    }
}

impl<'de, C> DeserializeSeed<'de> for BoundedSeq<'_, '_, C>
where
    C: Default + IntoIterator<Item: Deserialize<'de>> + Extend<C::Item>,
{
    type Value = C;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<C, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, C> Visitor<'de> for BoundedSeq<'_, '_, C>
where
    C: Default + IntoIterator<Item: Deserialize<'de>> + Extend<C::Item>,
{
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<C, A::Error> {
        let (mut items, mut count) = (C::default(), 0);
        while let Some(item) = seq.next_element()? {
            if count == self.limit {
                let (what, limit, detail) = (self.what, self.limit, self.detail.to_owned());
                return Err(self.ctx.stop(ApiError::TooMany { what, limit, detail }));
            }
            count += 1;
            items.extend(std::iter::once(item));
        }
        Ok(items)
    }
}

/// The longest request `id` accepted. Ids are echoed, logged and kept with each row for the label join, so they are
/// bounded; a UUID is 36 bytes and a W3C trace id 32.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// The most inputs a request may name when no model signature is known (the signature's count applies otherwise).
pub const MAX_INPUTS: usize = 1024;

/// What the decoder checks while it parses, shared by every input of one request: the model's signature (an input's
/// name and datatype are checked before its data is read), the input count, and the bytes the decoded tensors may
/// still take. A check that fails records its error and stops the parse at once; the caller reports that error, not
/// the parser's.
struct Context<'s> {
    signature: Option<&'s Signature>,
    /// The inputs decoded so far, in request order.
    inputs: std::cell::RefCell<Tensors>,
    /// The binary tensor extension's bytes not yet taken by an input (`None` without the extension).
    binary: std::cell::Cell<Option<&'s [u8]>>,
    /// Bytes the decoded tensors may still take.
    remaining: std::cell::Cell<usize>,
    limit: usize,
    body_bytes: usize,
    stopped: std::cell::RefCell<Option<ApiError>>,
}

impl<'s> Context<'s> {
    fn new(signature: Option<&'s Signature>, body_bytes: usize, binary: Option<&'s [u8]>) -> Self {
        let limit = body_bytes.saturating_mul(DECODE_FACTOR).saturating_add(DECODE_SLACK);
        Self {
            signature,
            inputs: std::cell::RefCell::new(Tensors::new()),
            binary: std::cell::Cell::new(binary),
            remaining: std::cell::Cell::new(limit),
            limit,
            body_bytes,
            stopped: std::cell::RefCell::new(None),
        }
    }

    /// Records `error` (the first one wins) and returns the parser error that unwinds the parse.
    fn stop<E: de::Error>(&self, error: ApiError) -> E {
        self.stopped.borrow_mut().get_or_insert(error);
        E::custom("stopped by a check")
    }

    /// Takes `bytes` from what the tensors may still use; false (and the error recorded) when they do not fit.
    fn spend(&self, bytes: usize) -> bool {
        match self.remaining.get().checked_sub(bytes) {
            Some(left) => {
                self.remaining.set(left);
                true
            }
            None => {
                self.remaining.set(0);
                self.stopped.borrow_mut().get_or_insert(self.too_large());
                false
            }
        }
    }

    fn too_large(&self) -> ApiError {
        ApiError::DecodeTooLarge {
            body_bytes: self.body_bytes,
            limit_bytes: self.limit,
            factor: DECODE_FACTOR,
            slack: DECODE_SLACK,
        }
    }

    /// The most inputs the request may have.
    fn max_inputs(&self) -> usize {
        self.signature.map_or(MAX_INPUTS, |s| s.inputs.len())
    }

    /// The error of a failed parse: a check's, else the parser's.
    fn error(&self, parse: &serde_json::Error, json: &[u8]) -> ApiError {
        self.stopped.borrow_mut().take().unwrap_or_else(|| invalid_json(parse, json))
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum RequestField {
    Id,
    Parameters,
    Inputs,
    Outputs,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for &Context<'_> {
    type Value = RawRequest<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawRequest<'de>, D::Error> {
        deserializer.deserialize_map(RequestVisitor(self, std::marker::PhantomData))
    }
}

struct RequestVisitor<'c, 's, 'a>(&'c Context<'s>, std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RequestVisitor<'_, '_, 'a> {
    type Value = RawRequest<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object with inputs")
    }

    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<RawRequest<'a>, M::Error> {
        let ctx = self.0;
        let (mut id, mut parameters, mut has_inputs, mut outputs) = (None, None, false, None);
        while let Some(field) = map.next_key::<RequestField>()? {
            match field {
                RequestField::Id => {
                    let value = map.next_value::<Option<Text<'a>>>()?.map(|text| text.0);
                    if let Some(long) = value.as_ref().filter(|v| v.len() > MAX_REQUEST_ID_BYTES) {
                        return Err(
                            ctx.stop(ApiError::RequestIdTooLong { got: long.len(), limit: MAX_REQUEST_ID_BYTES })
                        );
                    }
                    id = value;
                }
                RequestField::Parameters => parameters = map.next_value()?,
                RequestField::Inputs => {
                    map.next_value_seed(InputsSeed(ctx))?;
                    has_inputs = true;
                }
                RequestField::Outputs => {
                    let limit = ctx.signature.map_or(MAX_INPUTS, |s| s.outputs.len());
                    let seq = BoundedSeq::new(ctx, limit, "outputs", "no model has that many; name each at most once");
                    outputs = Some(map.next_value_seed(seq)?);
                }
                RequestField::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        // Its tensors went into `Context::inputs` as the parse read them.
        if !has_inputs {
            return Err(de::Error::missing_field("inputs"));
        }
        Ok(RawRequest { id, parameters, outputs })
    }
}

/// The `inputs` array, stopped at the model's input count; each input is decoded into a tensor as soon as it is read
/// and pushed onto [`Context::inputs`] (no list of raw inputs, and the tensors are not moved from list to list).
struct InputsSeed<'c, 's>(&'c Context<'s>);

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0;
        let limit = ctx.max_inputs();
        let mut count = 0;
        while let Some(input) = seq.next_element_seed(InputSeed(ctx))? {
            if count == limit {
                let detail = match ctx.signature {
                    Some(signature) => format!("the model takes {}", input_names(signature)),
                    None => "that is the server's limit".to_owned(),
                };
                return Err(ctx.stop(ApiError::TooMany { what: "inputs", limit, detail }));
            }
            count += 1;
            let tensor = decode_input(input, ctx).map_err(|error| ctx.stop::<A::Error>(error))?;
            ctx.inputs.borrow_mut().push(tensor);
        }
        Ok(())
    }
}

/// The model's inputs, for messages (as the signature check names them).
fn input_names(signature: &Signature) -> String {
    crate::infer::describe_tensors(&signature.inputs)
}

struct InputSeed<'c, 's>(&'c Context<'s>);

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_> {
    type Value = RawInput<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(InputVisitor(self.0, std::marker::PhantomData))
    }
}

struct RawInput<'a> {
    name: Cow<'a, str>,
    shape: SmallVec<[u64; 4]>,
    datatype: Cow<'a, str>,
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

struct InputVisitor<'c, 's, 'a>(&'c Context<'s>, std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InputVisitor<'_, '_, 'a> {
    type Value = RawInput<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input object with name, shape, datatype and data")
    }

    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<RawInput<'a>, M::Error> {
        let ctx = self.0;
        let mut name: Option<Cow<'a, str>> = None;
        let mut shape: Option<SmallVec<[u64; 4]>> = None;
        let mut datatype: Option<Cow<'a, str>> = None;
        let mut data = DataSlot::Absent;
        let mut binary_size = None;
        while let Some(field) = map.next_key::<InputField>()? {
            match field {
                InputField::Name => name = Some(map.next_value::<Text<'a>>()?.0),
                InputField::Shape => {
                    let seq =
                        BoundedSeq::new(ctx, MAX_DIMENSIONS, "dimensions in a shape", "that is the server's limit");
                    shape = Some(map.next_value_seed(seq)?);
                }
                InputField::Datatype => datatype = Some(map.next_value::<Text<'a>>()?.0),
                InputField::Data => {
                    let declared = datatype.as_deref().and_then(DataType::parse);
                    // With the name and datatype known, both are checked against the model before the data is read.
                    if let (Some(name), Some(datatype), Some(signature)) = (&name, declared, ctx.signature) {
                        check_declared(signature, name, datatype).map_err(|error| ctx.stop::<M::Error>(error))?;
                    }
                    data = match declared.and_then(|t| reserve(ctx, t, shape.as_deref())) {
                        Some(mut elements) => {
                            let mut problem = None;
                            with_vec!(&mut elements, v => map.next_value_seed(Flatten { into: v, problem: &mut problem, ctx }))?;
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

/// An input's name and datatype against the model's signature: the input's spec.
fn check_declared<'s>(signature: &'s Signature, name: &str, datatype: DataType) -> Result<&'s TensorSpec, ApiError> {
    match signature.inputs.iter().find(|spec| *spec.name == *name) {
        None => Err(ApiError::UnknownInput { input: name.to_owned(), expected: input_names(signature) }),
        Some(spec) if spec.datatype != datatype => Err(ApiError::DatatypeMismatch {
            input: name.to_owned(),
            expected: spec.datatype,
            got: datatype.as_str().to_owned(),
        }),
        Some(spec) => Ok(spec),
    }
}

/// An empty vector for an input's elements with room for what its shape declares, as far as the request's decode
/// budget covers it (a lying shape cannot make the server reserve more than the body could hold); `None` for a type
/// without a JSON form.
fn reserve(ctx: &Context<'_>, datatype: DataType, shape: Option<&[u64]>) -> Option<TensorData> {
    let size = datatype.size().unwrap_or(std::mem::size_of::<String>()).max(1);
    let declared = shape.and_then(element_count).unwrap_or(0);
    let elements = declared.min(ctx.remaining.get() / size);
    let data = TensorData::with_capacity(datatype, elements)?;
    ctx.spend(elements * size);
    Some(data)
}

fn element_count(shape: &[u64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<OutputParameterSet>,
}

/// The output parameters Vane reads (`classification` only to refuse it); others are skipped without being kept.
#[derive(Deserialize)]
struct OutputParameterSet {
    #[serde(default)]
    binary_data: Option<Scalar>,
    #[serde(default)]
    classification: Option<de::IgnoredAny>,
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
    let (json, binary) = match header_length {
        None => (body, None),
        Some(0) => return decode_raw_request(body, signature),
        Some(n) if n > body.len() => {
            return Err(ApiError::InvalidBinary {
                message: format!("Inference-Header-Content-Length is {n} but the body has only {} bytes", body.len()),
            })
        }
        Some(n) => (&body[..n], Some(&body[n..])),
    };
    let ctx = Context::new(signature, body.len(), binary);
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw = (&ctx).deserialize(&mut de).and_then(|raw| de.end().map(|()| raw)).map_err(|e| ctx.error(&e, json))?;
    let inputs = ctx.inputs.take();
    if let Some(rest) = ctx.binary.get().filter(|rest| !rest.is_empty()) {
        return Err(ApiError::InvalidBinary {
            message: format!(
                "{} bytes follow the JSON header beyond the inputs' binary_data_size; the sizes must add up to the \
                 body's length minus Inference-Header-Content-Length",
                rest.len()
            ),
        });
    }
    let flag = |value: Option<Scalar>, name: &'static str| match value {
        None => Ok(None),
        Some(Scalar::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(ApiError::InvalidParameter { name, message: "must be true or false" }),
    };
    let mut binary_outputs = BinaryOutputs {
        default: flag(raw.parameters.as_ref().and_then(|p| p.binary_data_output), "binary_data_output")?
            .unwrap_or(false),
        overrides: Vec::new(),
    };
    let mut outputs = Vec::new();
    for output in raw.outputs.unwrap_or_default() {
        if output.parameters.as_ref().is_some_and(|p| p.classification.is_some()) {
            return Err(ApiError::InvalidParameter {
                name: "classification",
                message: "the classification extension is not supported; ask for the scores and take the top k",
            });
        }
        if let Some(b) = flag(output.parameters.as_ref().and_then(|p| p.binary_data), "binary_data")? {
            binary_outputs.overrides.push((output.name.clone(), b));
        }
        outputs.push(output.name);
    }
    let timeout = match raw.parameters.as_ref().and_then(|p| p.timeout) {
        None => None,
        Some(Scalar::Unsigned(micros)) => Some(Duration::from_micros(micros)),
        Some(_) => {
            return Err(ApiError::InvalidParameter {
                name: "timeout",
                message: "must be a whole number of microseconds",
            })
        }
    };
    Ok(InferRequest { id: raw.id.map(Cow::into_owned), inputs, outputs, timeout, binary: binary_outputs })
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
        .map_err(|message| ApiError::InvalidData { input: spec.name.to_string(), message })?;
    Ok(InferRequest {
        id: None,
        inputs: smallvec::smallvec![Tensor { name: Arc::clone(&spec.name), shape: shape.into(), data }],
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

fn decode_input(raw: RawInput<'_>, ctx: &Context<'_>) -> Result<Tensor, ApiError> {
    let invalid = |message: String| ApiError::InvalidData { input: raw.name.to_string(), message };
    let datatype = DataType::parse(&raw.datatype).ok_or_else(|| {
        let known: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
        invalid(format!("unknown datatype '{}'; V2 datatypes are {}", raw.datatype, known.join(", ")))
    })?;
    // The signature's own name where there is one: shared, not copied.
    let name: Arc<str> = match ctx.signature {
        Some(signature) => Arc::clone(&check_declared(signature, &raw.name, datatype)?.name),
        None => Arc::from(&*raw.name),
    };
    let expected = element_count(&raw.shape).ok_or_else(|| invalid(format!("shape {:?} is too large", raw.shape)))?;
    let elements = match (raw.data, raw.binary_size) {
        (DataSlot::Absent, None) => return Err(invalid("has no 'data'".to_owned())),
        (DataSlot::Absent, Some(size)) => {
            let Some(rest) = ctx.binary.get() else {
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
            ctx.binary.set(Some(tail));
            let data = TensorData::from_raw(datatype, bytes, expected).map_err(&invalid)?;
            // Raw elements cost at most 6x their bytes (an empty BYTES element: 4 bytes, 24 in memory), so this
            // allocation was already bounded; it still counts against the request's decode budget.
            if !ctx.spend(data.heap_bytes()) {
                return Err(ctx.too_large());
            }
            data
        }
        (_, Some(_)) => return Err(invalid("has both 'data' and binary_data_size; send one".to_owned())),
        (DataSlot::Parsed(parsed), None) => parsed.map_err(&invalid)?,
        (DataSlot::Raw(data), None) => {
            let mut elements = reserve(ctx, datatype, Some(&raw.shape)).ok_or_else(|| {
                invalid(format!("{datatype} has no JSON form; send it with the binary tensor extension"))
            })?;
            let parsed = parse_elements(data, &mut elements, ctx);
            if let Some(error) = ctx.stopped.borrow_mut().take() {
                return Err(error);
            }
            parsed.map_err(|e| invalid(e.to_string()))?.map_err(&invalid)?;
            elements
        }
    };
    let shape: Shape = raw.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let got = elements.len();
    if got != expected {
        return Err(ApiError::ElementCount { input: name.to_string(), shape: shape.to_vec(), expected, got });
    }
    Ok(Tensor { name, shape, data: elements })
}

/// Parses raw `data` into `into`; the outer error is malformed JSON, the inner one the first bad element.
fn parse_elements(
    data: &RawValue,
    into: &mut TensorData,
    ctx: &Context<'_>,
) -> Result<Result<(), String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(data.get());
    let mut problem = None;
    with_vec!(into, v => Flatten { into: v, problem: &mut problem, ctx }.deserialize(&mut de))?;
    Ok(problem.map_or(Ok(()), Err))
}

/// Appends the elements of a (possibly nested) JSON array to a vector, checking each against the datatype. A bad
/// element is not appended; the first one's message is kept in `problem`, and the rest of the array is still read
/// so the JSON around it parses normally. Every byte the vector grows by, and a string's text, is taken from the
/// request's decode budget; past it the parse stops.
struct Flatten<'v, 'c, 's, T> {
    into: &'v mut Vec<T>,
    problem: &'v mut Option<String>,
    ctx: &'c Context<'s>,
}

impl<T: Element> Flatten<'_, '_, '_, T> {
    fn push<E: de::Error>(&mut self, element: Result<T, String>) -> Result<(), E> {
        match element {
            Ok(value) => {
                if self.into.len() == self.into.capacity() {
                    // Grow by what is there (at least 16), as far as the budget covers, and pay for it up front.
                    let size = std::mem::size_of::<T>().max(1);
                    let extra = self.into.len().max(16).min(self.ctx.remaining.get() / size);
                    if extra == 0 || !self.ctx.spend(extra * size) {
                        return Err(self.ctx.stop(self.ctx.too_large()));
                    }
                    self.into.reserve_exact(extra);
                }
                if !self.ctx.spend(value.heap_bytes()) {
                    return Err(self.ctx.stop(self.ctx.too_large()));
                }
                self.into.push(value);
            }
            Err(message) => {
                self.problem.get_or_insert(message);
            }
        }
        Ok(())
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
    /// What the element holds on the heap besides its slot in the vector.
    fn heap_bytes(&self) -> usize {
        0
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
    fn heap_bytes(&self) -> usize {
        crate::infer::string_heap_bytes(self)
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

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, '_, '_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, '_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::expected())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while seq.next_element_seed(Flatten { into: &mut *self.into, problem: &mut *self.problem, ctx })?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v))
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v))
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v))
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v))
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v))
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.push(Err(format!("expected {}, found null", T::expected())))
    }

    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        self.push(Err(format!("expected {}, found an object", T::expected())))
    }
}

/// What a successful inference's response says besides its outputs.
pub struct InferResponse<'a> {
    /// The model that answered.
    pub model_name: &'a str,
    /// The version that answered (the one actually used, also when the request named none).
    pub model_version: &'a str,
    /// The request's id, if it had one.
    pub id: Option<&'a str>,
}

/// The response body as serialised: the outputs are written straight from the tensors (no list built per response).
#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: OutputsJson<'a>,
}

struct OutputsJson<'a> {
    tensors: &'a [Tensor],
    binary: &'a BinaryOutputs,
}

impl Serialize for OutputsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.tensors.len()))?;
        for t in self.tensors {
            seq.serialize_element(&if self.binary.wants(&t.name) {
                OutputJson::binary(t)
            } else {
                OutputJson::inline(t)
            })?;
        }
        seq.end()
    }
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
pub fn encode_response(
    response: &InferResponse<'_>,
    outputs: &[Tensor],
    binary: &BinaryOutputs,
) -> (Vec<u8>, Option<usize>) {
    let mut body = Vec::new();
    let header = encode_response_into(&mut body, response, outputs, binary);
    (body, header)
}

/// The largest response body built in a thread's reused buffer (see [`encode_response_bytes`]); a larger one is
/// handed over whole, and a buffer grown past this is not kept.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`encode_response`] as the body hyper sends. A body of at most 64 KiB is written into a buffer the thread
/// reuses and copied out at its exact size: one allocation, where a fresh `Vec` handed to `Bytes` costs two (the
/// vector, and `Bytes`' shared header for a vector with spare capacity). The copy is a few hundred bytes for a
/// small model's answer; a larger body is handed over without one.
pub fn encode_response_bytes(
    response: &InferResponse<'_>,
    outputs: &[Tensor],
    binary: &BinaryOutputs,
) -> (bytes::Bytes, Option<usize>) {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        let header = encode_response_into(scratch, response, outputs, binary);
        let body = if scratch.len() <= SCRATCH_BYTES {
            bytes::Bytes::copy_from_slice(scratch)
        } else {
            bytes::Bytes::from(std::mem::take(scratch))
        };
        if scratch.capacity() > SCRATCH_BYTES {
            *scratch = Vec::new();
        }
        (body, header)
    })
}

/// Appends the response body to `body`; returns the JSON header's length when some output is binary.
fn encode_response_into(
    body: &mut Vec<u8>,
    response: &InferResponse<'_>,
    outputs: &[Tensor],
    binary: &BinaryOutputs,
) -> Option<usize> {
    // Room for the JSON at once (about 24 bytes per number at most), not grown from empty.
    let estimate: usize = outputs.iter().map(|t| 96 + t.name.len() + 24 * t.data.len()).sum();
    body.reserve(128 + response.id.map_or(0, str::len) + estimate);
    let json = ResponseJson {
        model_name: response.model_name,
        model_version: response.model_version,
        id: response.id,
        outputs: OutputsJson { tensors: outputs, binary },
    };
    // Serialising our own response types into a Vec cannot fail (string keys only).
    let _ = serde_json::to_writer(&mut *body, &json);
    let raw = || outputs.iter().filter(|t| binary.wants(&t.name));
    raw().next()?;
    let header = body.len();
    body.reserve(raw().map(|t| t.data.raw_len()).sum());
    for tensor in raw() {
        tensor.data.write_raw(body);
    }
    Some(header)
}

#[cfg(test)]
mod tests;
