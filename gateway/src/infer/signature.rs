//! A model's inputs and outputs, read from the ONNX graph once at load time, and the checks a request must pass
//! against them before it is queued.

use std::path::Path;
use std::sync::Arc;

use ort::session::Session;
use ort::value::{Outlet, ValueType};

use crate::errors::{ApiError, LoadError};
use crate::infer::{DataType, Tensors};

/// One input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The graph's name for it, shared with every tensor that carries it.
    pub name: Arc<str>,
    /// Its V2 datatype.
    pub datatype: DataType,
    /// Its shape, -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// Everything a model takes and gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// The outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
}

// === impl TensorSpec ===

impl TensorSpec {
    fn from_outlet(outlet: &Outlet, what: &'static str, path: &Path) -> Result<Self, LoadError> {
        let unsupported =
            |kind: String| LoadError::UnsupportedIo { path: path.into(), what, name: outlet.name().into(), kind };
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let datatype = DataType::from_onnx(*ty).ok_or_else(|| unsupported(format!("a tensor of {ty:?}")))?;
                let shape = shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect();
                Ok(Self { name: outlet.name().into(), datatype, shape })
            }
            other => Err(unsupported(format!("{other:?}"))),
        }
    }

    /// Whether the first dimension is dynamic, so rows can be batched along it.
    pub fn has_dynamic_batch(&self) -> bool {
        self.shape.first() == Some(&-1)
    }

    /// A concrete shape for this spec with every dynamic dimension set to 1: the warm-up shape.
    pub fn unit_shape(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1)).collect()
    }

    fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self.shape.iter().zip(shape).all(|(&want, &got)| want < 0 || usize::try_from(want) == Ok(got))
    }
}

// === impl Signature ===

impl Signature {
    /// Reads the signature of a loaded session; fails for inputs or outputs the protocol cannot carry.
    pub fn from_session(session: &Session, path: &Path) -> Result<Self, LoadError> {
        let inputs =
            session.inputs().iter().map(|o| TensorSpec::from_outlet(o, "input", path)).collect::<Result<_, _>>()?;
        let outputs =
            session.outputs().iter().map(|o| TensorSpec::from_outlet(o, "output", path)).collect::<Result<_, _>>()?;
        Ok(Self { inputs, outputs })
    }

    /// The outputs' names in graph order, shared.
    pub fn output_names(&self) -> Arc<[Arc<str>]> {
        self.outputs.iter().map(|o| Arc::clone(&o.name)).collect()
    }

    /// Whether every input and output has a dynamic first dimension, so requests can be concatenated along it.
    pub fn batches_on_first_dimension(&self) -> bool {
        !self.inputs.is_empty() && self.inputs.iter().chain(&self.outputs).all(TensorSpec::has_dynamic_batch)
    }

    /// Checks request tensors against the inputs and puts them in graph order. Element counts were already
    /// checked against each tensor's own shape when it was decoded.
    pub fn check_inputs(&self, given: &mut Tensors) -> Result<(), ApiError> {
        for (i, tensor) in given.iter().enumerate() {
            if !self.inputs.iter().any(|spec| spec.name == tensor.name) {
                return Err(ApiError::UnknownInput { input: tensor.name.to_string(), expected: names(&self.inputs) });
            }
            if given[..i].iter().any(|earlier| earlier.name == tensor.name) {
                return Err(ApiError::DuplicateInput { input: tensor.name.to_string() });
            }
        }
        for spec in &self.inputs {
            let tensor = given.iter().find(|t| t.name == spec.name).ok_or_else(|| ApiError::MissingInput {
                input: spec.name.to_string(),
                expected: names(&self.inputs),
            })?;
            if tensor.data.datatype() != spec.datatype {
                return Err(ApiError::DatatypeMismatch {
                    input: spec.name.to_string(),
                    expected: spec.datatype,
                    got: tensor.data.datatype().as_str().to_owned(),
                });
            }
            if !spec.accepts_shape(&tensor.shape) {
                return Err(ApiError::ShapeMismatch {
                    input: spec.name.to_string(),
                    expected: spec.shape.clone(),
                    got: tensor.shape.to_vec(),
                });
            }
            if tensor.shape.first() == Some(&0) {
                return Err(ApiError::EmptyBatch { input: spec.name.to_string(), shape: tensor.shape.to_vec() });
            }
        }
        // Every input is known, once, and none is missing: put them in graph order where they are.
        given.sort_unstable_by_key(|t| self.inputs.iter().position(|spec| spec.name == t.name));
        Ok(())
    }

    /// The position of each requested output, or all outputs when none is named.
    pub fn select_outputs<'a>(&self, requested: impl IntoIterator<Item = &'a str>) -> Result<Vec<usize>, ApiError> {
        let mut selected = Vec::new();
        for name in requested {
            let index = self
                .outputs
                .iter()
                .position(|o| &*o.name == name)
                .ok_or_else(|| ApiError::UnknownOutput { output: name.to_owned(), expected: names(&self.outputs) })?;
            if !selected.contains(&index) {
                selected.push(index);
            }
        }
        if selected.is_empty() {
            selected.extend(0..self.outputs.len());
        }
        Ok(selected)
    }
}

/// The tensors with their datatypes and shapes, for messages: `'a' (FP32 [-1, 2]), ...`.
pub fn names(specs: &[TensorSpec]) -> String {
    let quoted: Vec<String> = specs.iter().map(|s| format!("'{}' ({} {:?})", s.name, s.datatype, s.shape)).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{Tensor, TensorData};

    fn signature() -> Signature {
        let spec =
            |name: &str, datatype, shape: &[i64]| TensorSpec { name: name.into(), datatype, shape: shape.to_vec() };
        Signature {
            inputs: vec![spec("a", DataType::Fp32, &[-1, 2]), spec("b", DataType::Int64, &[-1])],
            outputs: vec![spec("y", DataType::Fp32, &[-1]), spec("z", DataType::Int64, &[-1])],
        }
    }

    fn a(shape: &[usize], n: usize) -> Tensor {
        Tensor { name: "a".into(), shape: shape.into(), data: TensorData::Fp32(vec![0.0; n]) }
    }

    fn b() -> Tensor {
        Tensor { name: "b".into(), shape: vec![1].into(), data: TensorData::Int64(vec![1]) }
    }

    #[test]
    fn inputs_come_back_in_graph_order() {
        let mut ordered: Tensors = smallvec::smallvec![b(), a(&[1, 2], 2)];
        signature().check_inputs(&mut ordered).unwrap();
        assert_eq!(&*ordered[0].name, "a");
        assert_eq!(&*ordered[1].name, "b");
    }

    #[test]
    fn each_mismatch_names_the_input_and_what_was_expected() {
        let s = signature();
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[1, 2], 2)]).unwrap_err();
        assert!(matches!(&err, ApiError::MissingInput { input, .. } if input == "b"), "{err}");
        let mut c = b();
        c.name = "c".into();
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[1, 2], 2), b(), c]).unwrap_err();
        assert!(err.to_string().starts_with("unknown input 'c': the model's inputs are 'a' (FP32 [-1, 2])"), "{err}");
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[1, 3], 3), b()]).unwrap_err();
        assert_eq!(err.to_string(), "input 'a' has shape [1, 3] but the model expects [-1, 2] (-1 means any size)");
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[2], 2), b()]).unwrap_err();
        assert!(matches!(err, ApiError::ShapeMismatch { .. }), "rank differs");
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[0, 2], 0), b()]).unwrap_err();
        assert!(matches!(err, ApiError::EmptyBatch { .. }), "{err}");
        let mut wrong = b();
        wrong.data = TensorData::Int32(vec![1]);
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[1, 2], 2), wrong]).unwrap_err();
        assert_eq!(err.to_string(), "input 'b' has datatype INT32 but the model expects INT64");
        let err = s.check_inputs(&mut smallvec::smallvec![a(&[1, 2], 2), b(), b()]).unwrap_err();
        assert!(matches!(err, ApiError::DuplicateInput { .. }), "{err}");
    }

    #[test]
    fn outputs_are_selected_by_name_or_all() {
        let s = signature();
        assert_eq!(s.select_outputs([]).unwrap(), [0, 1]);
        assert_eq!(s.select_outputs(["z", "z"]).unwrap(), [1]);
        assert!(matches!(s.select_outputs(["nope"]), Err(ApiError::UnknownOutput { .. })));
    }
}
