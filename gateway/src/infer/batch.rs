//! Concatenating requests along the batch (first) dimension and splitting the outputs back. Public for the benches.

use std::ops::Range;

use crate::infer::{Tensor, TensorData, Tensors};

/// Maps the vector inside any [`TensorData`] to a new vector of the same variant.
macro_rules! map_vec {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

/// The rows of a request: the first dimension of its first input (all inputs agree; see [`same_rows`]).
pub fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1)
}

/// Whether every input has the same first dimension, so the request can join a batch.
pub fn same_rows(inputs: &[Tensor]) -> bool {
    let rows = rows(inputs);
    inputs.iter().all(|t| t.shape.first() == Some(&rows))
}

/// Whether two requests' inputs can be concatenated: same trailing dimensions for every input.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..) && x.data.datatype() == y.data.datatype())
}

/// Concatenates the requests' inputs (each in graph order) along the first dimension.
pub fn concat(requests: Vec<Tensors>) -> Tensors {
    let mut requests = requests.into_iter();
    let Some(mut merged) = requests.next() else { return Tensors::new() };
    for request in requests {
        for (into, tensor) in merged.iter_mut().zip(request) {
            into.shape[0] += tensor.shape[0];
            append(&mut into.data, tensor.data);
        }
    }
    merged
}

fn append(into: &mut TensorData, from: TensorData) {
    macro_rules! same {
        ($($variant:ident),*) => {
            match (into, from) {
                $((TensorData::$variant(a), TensorData::$variant(b)) => a.extend(b),)*
                // `compatible` checked the datatypes before any concat.
                _ => unreachable!("batched inputs share datatypes"),
            }
        };
    }
    same!(Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp32, Fp64, Bytes);
}

/// Rows `range` of a batched output, or `None` if its first dimension is not the batch's row count.
pub fn slice_rows(tensor: &Tensor, range: Range<usize>, total_rows: usize) -> Option<Tensor> {
    if tensor.shape.first() != Some(&total_rows) {
        return None;
    }
    let per_row: usize = tensor.shape[1..].iter().product();
    let (start, end) = (range.start * per_row, range.end * per_row);
    let mut shape = tensor.shape.clone();
    shape[0] = range.len();
    let data = map_vec!(&tensor.data, v => v[start..end].to_vec());
    Some(Tensor { name: tensor.name.clone(), shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor { name: "x".into(), shape: shape.into(), data: TensorData::Fp32(data) }
    }

    #[test]
    fn concat_then_slice_gives_each_request_its_own_rows() {
        let a = vec![t(&[1, 2], vec![1.0, 2.0])];
        let b = vec![t(&[2, 2], vec![3.0, 4.0, 5.0, 6.0])];
        assert!(compatible(&a, &b));
        let merged = concat(vec![a.clone().into(), b.clone().into()]);
        assert_eq!(merged[0].shape.as_slice(), [3, 2]);
        assert_eq!(slice_rows(&merged[0], 0..1, 3).unwrap(), a[0]);
        assert_eq!(slice_rows(&merged[0], 1..3, 3).unwrap(), b[0]);
        assert!(slice_rows(&merged[0], 0..1, 4).is_none(), "first dimension must be the batch");
    }

    #[test]
    fn different_trailing_dims_or_types_do_not_batch() {
        let a = vec![t(&[1, 2], vec![1.0, 2.0])];
        assert!(!compatible(&a, &[t(&[1, 3], vec![0.0; 3])]));
        let ints = vec![Tensor { name: "x".into(), shape: vec![1, 2].into(), data: TensorData::Int64(vec![1, 2]) }];
        assert!(!compatible(&a, &ints));
        assert!(same_rows(&[t(&[2, 1], vec![0.0; 2]), t(&[2], vec![0.0; 2])]));
        assert!(!same_rows(&[t(&[2, 1], vec![0.0; 2]), t(&[3], vec![0.0; 3])]));
    }
}
