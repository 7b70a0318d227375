//! Fuzzes the REST request decoder: any bytes, as a JSON body or framed by the binary tensor extension's header,
//! must decode or be refused with an error, never panic or allocate without bound. Run with `bash benches/fuzz.sh`.
#![no_main]

use gateway::infer::{DataType, Signature, TensorSpec};
use libfuzzer_sys::fuzz_target;

fn signature() -> Signature {
    let spec = |name: &str, datatype, shape: &[i64]| TensorSpec { name: name.into(), datatype, shape: shape.to_vec() };
    Signature {
        inputs: vec![
            spec("input", DataType::Fp32, &[-1, 30]),
            spec("ids", DataType::Int64, &[-1]),
            spec("text", DataType::Bytes, &[-1]),
            spec("flag", DataType::Bool, &[-1, 2]),
        ],
        outputs: vec![spec("output", DataType::Fp32, &[-1, 2])],
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the framing: JSON only, the binary extension with a header length taken from the next
    // two bytes (possibly past the end), or Triton's raw request (header length 0).
    let Some((&mode, rest)) = data.split_first() else { return };
    let signature = signature();
    let (header, body) = match mode % 3 {
        0 => (None, rest),
        1 if rest.len() >= 2 => (Some(usize::from(u16::from_le_bytes([rest[0], rest[1]]))), &rest[2..]),
        1 => (None, rest),
        _ => (Some(0), rest),
    };
    if let Ok(mut request) = gateway::routes::decode_request(body, header, Some(&signature)) {
        // A decoded request is consistent: every input's data fills its shape.
        for input in &request.inputs {
            assert_eq!(input.data.len(), input.shape.iter().product::<usize>(), "{}", input.name);
        }
        let _ = signature.check_inputs(&mut request.inputs);
    }
});
