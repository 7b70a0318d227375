//! The boundary with ONNX Runtime: building sessions and converting [`Tensor`]s to and from `ort` values.

use std::path::Path;
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, TensorRef, ValueType};

use crate::errors::{InferError, LoadError};
use crate::infer::{with_vec, Shape, Tensor, TensorData, Tensors};
use crate::runtime;

/// Applies `$body` to the vector of any non-string [`TensorData`] variant.
macro_rules! with_primitive {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes(_) => unreachable!("strings are converted separately"),
        }
    };
}

/// Builds a session for the model at `path`. Blocking (reads the file, optimises the graph).
pub(super) fn build_session(path: &Path, intra_threads: usize) -> Result<Session, LoadError> {
    let environment = runtime::environment()?;
    let wrap = |source: ort::Error| LoadError::Session { path: path.into(), source };
    let builder = Session::builder(environment).map_err(wrap)?;
    let builder = builder.with_optimization_level(GraphOptimizationLevel::Level3).map_err(|e| wrap(e.into()))?;
    // One intra-op thread by default: on small machines parallelism across requests beats ORT's own pool
    // (shared/notes/onnxruntime.md).
    let mut builder = builder.with_intra_threads(intra_threads).map_err(|e| wrap(e.into()))?;
    builder.commit_from_file(path).map_err(wrap)
}

/// Runs `inputs` (already checked and in graph order) and returns the outputs at `selected` positions, each named
/// from `names` (the signature's output names in graph order, shared rather than copied).
/// Inputs go by position (no names to copy), a single input without a list; outputs are taken by position.
pub(super) fn run(
    session: &mut Session,
    inputs: Tensors,
    selected: &[usize],
    names: &[Arc<str>],
) -> Result<Tensors, InferError> {
    // Views of the request's own buffers: ONNX Runtime reads them in place (no copy, no box per input).
    let outputs = match inputs.as_slice() {
        [tensor] => session.run([to_value(tensor)?])?,
        inputs => {
            let values = inputs.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
            session.run(values.as_slice())?
        }
    };
    selected.iter().map(|&i| from_outputs(&outputs, i, names)).collect()
}

fn to_value(tensor: &Tensor) -> Result<SessionInputValue<'_>, InferError> {
    let shape = tensor.shape.as_slice();
    let value = match &tensor.data {
        TensorData::Bytes(strings) => OrtTensor::from_string_array((shape, strings.as_slice()))?.into(),
        other => with_primitive!(other, v => TensorRef::from_array_view((shape, v.as_slice()))?.into()),
    };
    Ok(value)
}

fn from_outputs(outputs: &SessionOutputs<'_>, index: usize, names: &[Arc<str>]) -> Result<Tensor, InferError> {
    let Some(name) = names.get(index).filter(|_| index < outputs.len()) else {
        return Err(InferError::UnsupportedOutput { name: format!("#{index}") });
    };
    let value: &DynValue = &outputs[index];
    let unsupported = || InferError::UnsupportedOutput { name: name.to_string() };
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(unsupported());
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>()?;
            (shape.iter().map(|&d| d as usize).collect(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data): (Shape, TensorData) = match ty {
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::Uint8 => extract!(u8, Uint8),
        TensorElementType::Uint16 => extract!(u16, Uint16),
        TensorElementType::Uint32 => extract!(u32, Uint32),
        TensorElementType::Uint64 => extract!(u64, Uint64),
        TensorElementType::Int8 => extract!(i8, Int8),
        TensorElementType::Int16 => extract!(i16, Int16),
        TensorElementType::Int32 => extract!(i32, Int32),
        TensorElementType::Int64 => extract!(i64, Int64),
        TensorElementType::Float32 => extract!(f32, Fp32),
        TensorElementType::Float64 => extract!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings()?;
            (shape.iter().map(|&d| d as usize).collect(), TensorData::Bytes(strings))
        }
        _ => return Err(unsupported()),
    };
    debug_assert_eq!(with_vec!(&data, v => v.len()), shape.iter().product::<usize>());
    Ok(Tensor { name: Arc::clone(name), shape, data })
}
