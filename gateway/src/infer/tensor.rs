//! Tensors as the gateway holds them between the wire and ONNX Runtime: a name, a shape and typed, row-major data.

use std::fmt;

/// A V2 datatype name, as in `"datatype": "FP32"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`, ONNX `bool`.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: reported in metadata; has no JSON form (the binary extension will carry it).
    Fp16,
    /// `FP32`, ONNX `float`.
    Fp32,
    /// `FP64`, ONNX `double`.
    Fp64,
    /// `BYTES`, ONNX `string`.
    Bytes,
}

/// A tensor's elements, row-major, one variant per element type that can cross the JSON protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `UINT8`.
    Uint8(Vec<u8>),
    /// `UINT16`.
    Uint16(Vec<u16>),
    /// `UINT32`.
    Uint32(Vec<u32>),
    /// `UINT64`.
    Uint64(Vec<u64>),
    /// `INT8`.
    Int8(Vec<i8>),
    /// `INT16`.
    Int16(Vec<i16>),
    /// `INT32`.
    Int32(Vec<i32>),
    /// `INT64`.
    Int64(Vec<i64>),
    /// `FP32`.
    Fp32(Vec<f32>),
    /// `FP64`.
    Fp64(Vec<f64>),
    /// `BYTES` (ONNX strings are UTF-8).
    Bytes(Vec<String>),
}

/// A named tensor with its full (batched) shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The input or output name.
    pub name: String,
    /// The shape; its product equals the element count.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: TensorData,
}

/// Applies `$body` to the vector inside any [`TensorData`] variant.
macro_rules! with_vec {
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
            TensorData::Bytes($v) => $body,
        }
    };
}
pub(crate) use with_vec;

// === impl DataType ===

impl DataType {
    /// Every datatype, for parsing and for listing in error messages.
    pub const ALL: [DataType; 13] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bytes,
    ];

    /// The protocol's name for this type.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name (case-sensitive, as the protocol says).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The V2 type of an ONNX Runtime element type, if the protocol has one.
    pub fn from_onnx(ty: ort::value::TensorElementType) -> Option<Self> {
        use ort::value::TensorElementType as T;
        Some(match ty {
            T::Bool => Self::Bool,
            T::Uint8 => Self::Uint8,
            T::Uint16 => Self::Uint16,
            T::Uint32 => Self::Uint32,
            T::Uint64 => Self::Uint64,
            T::Int8 => Self::Int8,
            T::Int16 => Self::Int16,
            T::Int32 => Self::Int32,
            T::Int64 => Self::Int64,
            T::Float16 => Self::Fp16,
            T::Float32 => Self::Fp32,
            T::Float64 => Self::Fp64,
            T::String => Self::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TensorData ===

impl TensorData {
    /// An empty vector of `datatype`'s elements with room for `capacity`, or `None` for a type without a JSON form.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> Option<Self> {
        Some(match datatype {
            DataType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => Self::Uint8(Vec::with_capacity(capacity)),
            DataType::Uint16 => Self::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => Self::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => Self::Uint64(Vec::with_capacity(capacity)),
            DataType::Int8 => Self::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(Vec::with_capacity(capacity)),
            DataType::Fp32 => Self::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => Self::Fp64(Vec::with_capacity(capacity)),
            DataType::Bytes => Self::Bytes(Vec::with_capacity(capacity)),
            DataType::Fp16 => return None,
        })
    }

    /// `count` zero elements (`false`, `0`, `""`): the warm-up input.
    pub fn zeros(datatype: DataType, count: usize) -> Option<Self> {
        let mut data = Self::with_capacity(datatype, count)?;
        with_vec!(&mut data, v => v.resize(count, Default::default()));
        Some(data)
    }

    /// The element type.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Uint16(_) => DataType::Uint16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Fp32(_) => DataType::Fp32,
            Self::Fp64(_) => DataType::Fp64,
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip_and_are_case_sensitive() {
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.as_str()), Some(t));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn zeros_have_the_type_and_count_asked_for() {
        let z = TensorData::zeros(DataType::Bytes, 3).unwrap();
        assert_eq!(z, TensorData::Bytes(vec![String::new(); 3]));
        assert_eq!(TensorData::zeros(DataType::Int32, 2).unwrap().datatype(), DataType::Int32);
        assert!(TensorData::zeros(DataType::Fp16, 1).is_none());
    }
}
