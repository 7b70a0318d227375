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

/// What a string's text takes on the heap: nothing when empty, else its capacity rounded up to the allocator's
/// smallest granule (8 bytes).
pub fn string_heap_bytes(s: &String) -> usize {
    if s.capacity() == 0 {
        0
    } else {
        s.capacity().next_multiple_of(8)
    }
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// A tensor's shape: inline up to four dimensions, so a request's shapes cost no allocation.
pub type Shape = smallvec::SmallVec<[usize; 4]>;

/// A request's inputs or an answer's outputs: inline up to two tensors (every model served here so far), so a
/// request's lists cost no allocation.
pub type Tensors = smallvec::SmallVec<[Tensor; 2]>;

/// A named tensor with its full (batched) shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The input or output name: the model signature's own name where one is known, shared rather than copied.
    pub name: std::sync::Arc<str>,
    /// The shape; its product equals the element count.
    pub shape: Shape,
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

// === impl Tensor ===

impl Tensor {
    /// Column `index` of a `[rows, columns]` tensor (a `[rows]` one has one column), one number per row, read in
    /// place; NaN for a row too short; `None` for BYTES. What the monitor and a rollout read a prediction from.
    pub fn column(&self, index: usize) -> Option<Vec<f64>> {
        let columns = self.shape.get(1).copied().unwrap_or(1).max(1);
        fn pick<T: Copy>(values: &[T], columns: usize, index: usize, f: impl Fn(T) -> f64) -> Vec<f64> {
            values.chunks(columns).map(|row| row.get(index).map_or(f64::NAN, |v| f(*v))).collect()
        }
        Some(match &self.data {
            TensorData::Bool(v) => pick(v, columns, index, |b| f64::from(u8::from(b))),
            TensorData::Uint8(v) => pick(v, columns, index, f64::from),
            TensorData::Uint16(v) => pick(v, columns, index, f64::from),
            TensorData::Uint32(v) => pick(v, columns, index, f64::from),
            TensorData::Uint64(v) => pick(v, columns, index, |x| x as f64),
            TensorData::Int8(v) => pick(v, columns, index, f64::from),
            TensorData::Int16(v) => pick(v, columns, index, f64::from),
            TensorData::Int32(v) => pick(v, columns, index, f64::from),
            TensorData::Int64(v) => pick(v, columns, index, |x| x as f64),
            TensorData::Fp32(v) => pick(v, columns, index, f64::from),
            TensorData::Fp64(v) => pick(v, columns, index, |x| x),
            TensorData::Bytes(_) => return None,
        })
    }
}

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

    /// The size of one element in bytes, or `None` for BYTES (variable).
    pub const fn size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 | Self::Fp16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
            Self::Bytes => return None,
        })
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

    /// The elements of `datatype` in the protocol's raw layout (the binary tensor extension and gRPC's raw contents):
    /// little-endian, row-major, BOOL one byte 0 or 1, each BYTES element a 4-byte little-endian length and its
    /// bytes. `expected` is the element count the shape needs; an error says how the bytes disagree with it.
    pub fn from_raw(datatype: DataType, raw: &[u8], expected: usize) -> Result<Self, String> {
        // `read` is a type parameter, not a `fn` pointer: the call is inlined and the loop compiles to a copy (a
        // pointer call per element was 9% of the request threads' CPU for 1024-feature binary requests).
        fn fixed<T, const N: usize>(
            raw: &[u8],
            expected: usize,
            read: impl Fn([u8; N]) -> T,
        ) -> Result<Vec<T>, String> {
            if raw.len() != expected.saturating_mul(N) {
                return Err(format!(
                    "{} bytes of raw data, but {expected} elements of {N} bytes need {}",
                    raw.len(),
                    expected.saturating_mul(N)
                ));
            }
            // `chunks_exact` yields slices of exactly N bytes, so the conversion cannot fail.
            Ok(raw.chunks_exact(N).map(|c| read(c.try_into().unwrap_or([0; N]))).collect())
        }
        Ok(match datatype {
            DataType::Bool => Self::Bool(
                fixed(raw, expected, |[b]: [u8; 1]| b)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(format!("BOOL element {i} is byte {other}; BOOL is one byte, 0 or 1")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => Self::Uint8(fixed(raw, expected, u8::from_le_bytes)?),
            DataType::Uint16 => Self::Uint16(fixed(raw, expected, u16::from_le_bytes)?),
            DataType::Uint32 => Self::Uint32(fixed(raw, expected, u32::from_le_bytes)?),
            DataType::Uint64 => Self::Uint64(fixed(raw, expected, u64::from_le_bytes)?),
            DataType::Int8 => Self::Int8(fixed(raw, expected, i8::from_le_bytes)?),
            DataType::Int16 => Self::Int16(fixed(raw, expected, i16::from_le_bytes)?),
            DataType::Int32 => Self::Int32(fixed(raw, expected, i32::from_le_bytes)?),
            DataType::Int64 => Self::Int64(fixed(raw, expected, i64::from_le_bytes)?),
            DataType::Fp32 => Self::Fp32(fixed(raw, expected, f32::from_le_bytes)?),
            DataType::Fp64 => Self::Fp64(fixed(raw, expected, f64::from_le_bytes)?),
            DataType::Fp16 => return Err("FP16 tensors are not supported by this server".to_owned()),
            DataType::Bytes => {
                // Each element takes at least its 4-byte length, so the bytes bound the count whatever the shape says.
                let mut strings = Vec::with_capacity(expected.min(raw.len() / 4));
                let mut rest = raw;
                while !rest.is_empty() {
                    let i = strings.len();
                    let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                        return Err(format!(
                            "BYTES element {i}: {} bytes left, too few for its 4-byte length",
                            rest.len()
                        ));
                    };
                    let length = u32::from_le_bytes(*length) as usize;
                    if length > tail.len() {
                        return Err(format!(
                            "BYTES element {i} declares {length} bytes but only {} are left",
                            tail.len()
                        ));
                    }
                    let (bytes, tail) = tail.split_at(length);
                    let text = std::str::from_utf8(bytes)
                        .map_err(|e| format!("BYTES element {i} is not UTF-8 ({e}); ONNX strings are UTF-8"))?;
                    strings.push(text.to_owned());
                    rest = tail;
                }
                if strings.len() != expected {
                    return Err(format!(
                        "raw data holds {} BYTES elements but the shape needs {expected}",
                        strings.len()
                    ));
                }
                Self::Bytes(strings)
            }
        })
    }

    /// Appends the elements in the raw layout [`TensorData::from_raw`] reads.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            Self::Uint8(v) => out.extend_from_slice(v),
            Self::Uint16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Uint32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Uint64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Int8(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Int16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Int32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Int64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Fp32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Fp64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Bytes(v) => v.iter().for_each(|s| {
                // An ONNX string longer than 4 GiB cannot be produced within the body limits.
                out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }

    /// The memory the elements take: the vector's capacity, and each string's text as the allocator rounds it.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Self::Bytes(v) => {
                v.capacity() * std::mem::size_of::<String>() + v.iter().map(string_heap_bytes).sum::<usize>()
            }
            other => with_vec!(other, v => vec_bytes(v)),
        }
    }

    /// The size of [`TensorData::write_raw`]'s output.
    pub fn raw_len(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|s| 4 + s.len()).sum(),
            other => other.len() * other.datatype().size().unwrap_or(0),
        }
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

    #[test]
    fn raw_layout_round_trips_every_type() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![u64::MAX, 0]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-2, 3]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![-1, i64::MAX]),
            TensorData::Fp32(vec![1.5, f32::MIN_POSITIVE]),
            TensorData::Fp64(vec![0.1, -2.5e300]),
            TensorData::Bytes(vec!["héllo".into(), String::new()]),
        ];
        for data in cases {
            let mut raw = Vec::new();
            data.write_raw(&mut raw);
            assert_eq!(raw.len(), data.raw_len(), "{data:?}");
            assert_eq!(TensorData::from_raw(data.datatype(), &raw, 2).unwrap(), data);
        }
    }

    #[test]
    fn raw_data_that_disagrees_with_the_shape_is_refused_with_the_sizes() {
        let e = TensorData::from_raw(DataType::Fp32, &[0; 7], 2).unwrap_err();
        assert_eq!(e, "7 bytes of raw data, but 2 elements of 4 bytes need 8");
        let e = TensorData::from_raw(DataType::Bool, &[0, 2], 2).unwrap_err();
        assert!(e.contains("BOOL element 1 is byte 2"), "{e}");
        let e = TensorData::from_raw(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).unwrap_err();
        assert_eq!(e, "BYTES element 0 declares 5 bytes but only 1 are left");
        let e = TensorData::from_raw(DataType::Bytes, &[1, 0], 1).unwrap_err();
        assert!(e.contains("too few for its 4-byte length"), "{e}");
        let e = TensorData::from_raw(DataType::Bytes, &[1, 0, 0, 0, b'a'], 2).unwrap_err();
        assert_eq!(e, "raw data holds 1 BYTES elements but the shape needs 2");
        let e = TensorData::from_raw(DataType::Bytes, &[1, 0, 0, 0, 0xff], 1).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        // A length prefix near u32::MAX cannot make the decoder read or reserve beyond the body.
        assert!(TensorData::from_raw(DataType::Bytes, &[0xff, 0xff, 0xff, 0xff], 1).is_err());
    }
}
