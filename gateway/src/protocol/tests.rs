use super::*;

fn one_input(input: &str) -> Result<Tensor, ApiError> {
    let body = format!(r#"{{"inputs": [{input}]}}"#);
    decode_request(body.as_bytes(), None, None).map(|mut r| r.inputs.remove(0))
}

#[test]
fn flat_and_nested_data_decode_to_the_same_tensor() {
    let flat = one_input(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}"#).unwrap();
    let nested = one_input(r#"{"data":[[1,2.5],[3,4]],"name":"x","datatype":"FP32","shape":[2,2]}"#).unwrap();
    assert_eq!(flat, nested);
    assert_eq!(flat.data, TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0]));
}

#[test]
fn every_json_datatype_decodes() {
    let cases = [
        (r#""BOOL","data":[true,false]"#, TensorData::Bool(vec![true, false])),
        (r#""INT32","data":[-2147483648,7]"#, TensorData::Int32(vec![i32::MIN, 7])),
        (r#""INT64","data":[9007199254740993,-1]"#, TensorData::Int64(vec![9_007_199_254_740_993, -1])),
        (r#""UINT64","data":[18446744073709551615,0]"#, TensorData::Uint64(vec![u64::MAX, 0])),
        (r#""FP64","data":[0.1,-2]"#, TensorData::Fp64(vec![0.1, -2.0])),
        (r#""BYTES","data":["a","vané"]"#, TensorData::Bytes(vec!["a".into(), "vané".into()])),
    ];
    for (tail, expected) in cases {
        let tensor = one_input(&format!(r#"{{"name":"x","shape":[2],"datatype":{tail}}}"#)).unwrap();
        assert_eq!(tensor.data, expected, "{tail}");
    }
}

#[test]
fn id_and_requested_outputs_are_kept_and_parameters_accepted() {
    let body = br#"{"id":"r-1","parameters":{"a":1,"b":"x","c":true},"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1],"parameters":{"k":"v"}}],"outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#;
    let request = decode_request(body, None, None).unwrap();
    assert_eq!(request.id.as_deref(), Some("r-1"));
    assert_eq!(request.outputs, ["y"]);
}

fn message(input: &str) -> String {
    one_input(input).unwrap_err().to_string()
}

#[test]
fn bad_elements_name_the_input_and_the_expected_type() {
    let m = message(r#"{"name":"x","shape":[2],"datatype":"FP32","data":[1,"two"]}"#);
    assert!(m.starts_with("input 'x': expected a number (FP32), found a string"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}"#);
    assert!(m.contains("expected an integer (INT32), found 1.5"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"INT8","data":[300]}"#);
    assert!(m.contains("300 is out of range for INT8"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1e300]}"#);
    assert!(m.contains("out of range for FP32"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}"#);
    assert!(m.contains("expected true or false (BOOL), found a number"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[null]}"#);
    assert!(m.contains("found null"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}"#);
    assert!(m.contains("unknown datatype 'FLOAT'"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"FP16","data":[1]}"#);
    assert!(m.contains("FP16 has no JSON form"), "{m}");
    let m = message(r#"{"name":"x","shape":[1],"datatype":"FP32"}"#);
    assert!(m.contains("has no 'data'"), "{m}");
}

#[test]
fn element_count_must_match_the_shape() {
    let err = one_input(r#"{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5]}"#).unwrap_err();
    assert_eq!(err.to_string(), "input 'x' has shape [2, 3], which needs 6 elements, but its data holds 5");
}

#[test]
fn a_huge_shape_does_not_allocate_for_it() {
    let err = one_input(r#"{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}"#).unwrap_err();
    assert!(matches!(err, ApiError::InvalidData { .. } | ApiError::ElementCount { .. }), "{err}");
    let err = one_input(r#"{"name":"x","shape":[100000000000],"datatype":"FP32","data":[1]}"#).unwrap_err();
    assert!(matches!(err, ApiError::ElementCount { .. }), "{err}");
}

#[test]
fn malformed_json_says_where_and_why() {
    let m = decode_request(b"{\"inputs\": [", None, None).unwrap_err().to_string();
    assert!(m.starts_with("invalid JSON body: EOF while parsing"), "{m}");
    let m = decode_request(b"{}", None, None).unwrap_err().to_string();
    assert!(m.contains("missing field `inputs`"), "{m}");
    let m = decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}"#, None, None)
        .unwrap_err()
        .to_string();
    assert!(m.contains("NaN and Infinity are not JSON numbers"), "{m}");
    let m =
        decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[-Infinity]}]}"#, None, None)
            .unwrap_err()
            .to_string();
    assert!(m.contains("NaN and Infinity are not JSON numbers"), "{m}");
    let m = decode_request(br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#, None, None)
        .unwrap_err()
        .to_string();
    assert!(m.contains("invalid value: integer `-1`"), "{m}");
}

#[test]
fn responses_encode_every_type() {
    let outputs = [
        Tensor { name: "p".into(), shape: vec![1, 2].into(), data: TensorData::Fp32(vec![0.25, 0.75]) },
        Tensor { name: "l".into(), shape: vec![1].into(), data: TensorData::Int64(vec![1]) },
        Tensor { name: "s".into(), shape: vec![1].into(), data: TensorData::Bytes(vec!["é".into()]) },
        Tensor { name: "b".into(), shape: vec![1].into(), data: TensorData::Bool(vec![true]) },
    ];
    let response = InferResponse { model_name: "m", model_version: "2", id: Some("7") };
    let (body, header) = encode_response(&response, &outputs, &BinaryOutputs::default());
    assert_eq!(header, None);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text,
        r#"{"model_name":"m","model_version":"2","id":"7","outputs":[{"name":"p","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]},{"name":"l","datatype":"INT64","shape":[1],"data":[1]},{"name":"s","datatype":"BYTES","shape":[1],"data":["é"]},{"name":"b","datatype":"BOOL","shape":[1],"data":[true]}]}"#
    );
}

#[test]
fn with_a_signature_a_datatype_mismatch_is_reported_before_the_values() {
    use crate::infer::TensorSpec;
    let signature = Signature {
        inputs: vec![TensorSpec { name: "x".into(), datatype: DataType::Int64, shape: vec![-1] }],
        outputs: vec![],
    };
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[9007199254740990]}]}"#;
    let err = decode_request(body, None, Some(&signature)).unwrap_err();
    assert_eq!(err.to_string(), "input 'x' has datatype INT32 but the model expects INT64");
}

#[test]
fn the_first_bad_element_is_reported_whichever_order_the_fields_come_in() {
    for input in [
        r#"{"name":"x","shape":[3],"datatype":"INT64","data":[1,{"a":[2]},"z"]}"#,
        r#"{"data":[1,{"a":[2]},"z"],"name":"x","shape":[3],"datatype":"INT64"}"#,
    ] {
        assert_eq!(message(input), "input 'x': expected a number (INT64), found an object", "{input}");
    }
    let ok =
        one_input(r#"{"name":"x","shape":[1],"datatype":"INT64","data":[1],"parameters":{"k":[1,2]},"extra":null}"#);
    assert_eq!(ok.unwrap().data, TensorData::Int64(vec![1]), "unknown input fields are ignored");
}

/// A binary-extension body: the JSON header, then the raw bytes; returns the body and the header's length.
fn framed(json: &str, raw: &[u8]) -> (Vec<u8>, usize) {
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(raw);
    (body, json.len())
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn binary_inputs_take_their_bytes_in_order_beside_json_ones() {
    let mut raw = f32s(&[1.0, f32::NAN, 3.0]);
    raw.extend_from_slice(&[2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
    let (body, header) = framed(
        r#"{"inputs":[{"name":"a","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}},
            {"name":"j","shape":[1],"datatype":"INT64","data":[5]},
            {"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":10}}],
           "parameters":{"binary_data_output":true},
           "outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}"#,
        &raw,
    );
    let request = decode_request(&body, Some(header), None).unwrap();
    let TensorData::Fp32(a) = &request.inputs[0].data else { panic!("{:?}", request.inputs[0]) };
    assert_eq!((a[0], a[1].is_nan(), a[2]), (1.0, true, 3.0));
    assert_eq!(request.inputs[1].data, TensorData::Int64(vec![5]));
    assert_eq!(request.inputs[2].data, TensorData::Bytes(vec!["hi".into(), String::new()]));
    assert!(!request.binary.wants("y") && request.binary.wants("z"));
}

#[test]
fn binary_framing_that_does_not_add_up_is_refused_naming_the_sizes() {
    let input = |size: usize| {
        format!(
            r#"{{"inputs":[{{"name":"a","shape":[2],"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}}]}}"#
        )
    };
    let cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
        // The header length runs past the body.
        (input(8).into_bytes(), Some(10_000), "Inference-Header-Content-Length is 10000 but the body has only"),
        // The body is cut short: fewer bytes than binary_data_size.
        (
            {
                let (b, _) = framed(&input(8), &f32s(&[1.0]));
                b
            },
            Some(input(8).len()),
            "binary_data_size is 8 but only 4 bytes",
        ),
        // binary_data_size disagrees with the shape.
        (
            {
                let (b, _) = framed(&input(4), &f32s(&[1.0]));
                b
            },
            Some(input(4).len()),
            "4 bytes of raw data, but 2 elements of 4 bytes need 8",
        ),
        // Bytes left over after every input took its share.
        (
            {
                let (b, _) = framed(&input(8), &f32s(&[1.0, 2.0, 3.0]));
                b
            },
            Some(input(8).len()),
            "4 bytes follow the JSON header",
        ),
        // binary_data_size without the header.
        (input(8).into_bytes(), None, "no Inference-Header-Content-Length header"),
        // The header length cuts the JSON.
        (input(8).into_bytes(), Some(5), "invalid JSON body"),
    ];
    for (body, header, needle) in cases {
        let err = decode_request(&body, header, None).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{err}");
        assert!(err.to_string().contains(needle), "{err} should contain {needle:?}");
    }
    let both = framed(
        r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#,
        &f32s(&[1.0]),
    );
    assert!(decode_request(&both.0, Some(both.1), None).unwrap_err().to_string().contains("has both 'data'"));
}

#[test]
fn a_raw_binary_request_is_one_row_of_the_only_input() {
    use crate::infer::TensorSpec;
    let signature = |shape: Vec<i64>| Signature {
        inputs: vec![TensorSpec { name: "x".into(), datatype: DataType::Fp32, shape }],
        outputs: vec![],
    };
    let request = decode_request(&f32s(&[1.0, 2.0, 3.0]), Some(0), Some(&signature(vec![-1, 3]))).unwrap();
    assert_eq!(request.inputs[0].shape.as_slice(), [1, 3]);
    assert!(request.binary.wants("anything"));
    let request = decode_request(&f32s(&[1.0, 2.0]), Some(0), Some(&signature(vec![-1, -1]))).unwrap();
    assert_eq!(request.inputs[0].shape.as_slice(), [1, 2]);
    let err = decode_request(&f32s(&[1.0, 2.0]), Some(0), Some(&signature(vec![-1, 3]))).unwrap_err();
    assert!(err.to_string().contains("8 bytes of raw data, but 3 elements"), "{err}");
    let err = decode_request(&[0; 4], Some(0), None).unwrap_err();
    assert!(err.to_string().contains("needs a model with exactly one input"), "{err}");
}

#[test]
fn binary_outputs_follow_the_header_in_order_with_their_sizes() {
    let outputs = [
        Tensor { name: "p".into(), shape: vec![1, 2].into(), data: TensorData::Fp32(vec![0.25, 0.75]) },
        Tensor { name: "l".into(), shape: vec![1].into(), data: TensorData::Int64(vec![1]) },
        Tensor { name: "s".into(), shape: vec![1].into(), data: TensorData::Bytes(vec!["é".into()]) },
    ];
    let binary = BinaryOutputs { default: true, overrides: vec![("l".into(), false)] };
    let response = InferResponse { model_name: "m", model_version: "1", id: None };
    let (body, header) = encode_response(&response, &outputs, &binary);
    let header = header.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
    assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(json["outputs"][0].get("data").is_none());
    assert_eq!(json["outputs"][1]["data"], serde_json::json!([1]));
    assert_eq!(json["outputs"][2]["parameters"]["binary_data_size"], 6);
    let mut expected = f32s(&[0.25, 0.75]);
    expected.extend_from_slice(&[2, 0, 0, 0, 0xc3, 0xa9]);
    assert_eq!(&body[header..], expected.as_slice());
}

#[test]
fn shapes_outputs_and_parameters_are_bounded_before_they_are_kept() {
    use crate::infer::TensorSpec;
    let spec = |name: &str| TensorSpec { name: name.into(), datatype: DataType::Fp32, shape: vec![-1] };
    let signature = Signature { inputs: vec![spec("x")], outputs: vec![spec("y"), spec("z")] };
    // A shape past 32 dimensions stops the parse where it stands.
    let dims = vec!["1"; 33].join(",");
    let body = format!(r#"{{"inputs":[{{"name":"x","shape":[{dims}],"datatype":"FP32","data":[1]}}]}}"#);
    let err = decode_request(body.as_bytes(), None, Some(&signature)).unwrap_err();
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    assert!(err.to_string().starts_with("the request has more than 32 dimensions in a shape"), "{err}");
    // More outputs named than the model has.
    let outputs = [r#"{"name":"y"}"#; 3].join(",");
    let body =
        format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"outputs":[{outputs}]}}"#);
    let err = decode_request(body.as_bytes(), None, Some(&signature)).unwrap_err();
    assert!(err.to_string().starts_with("the request has more than 2 outputs"), "{err}");
    // Unknown parameters of any shape are skipped; the ones read are still checked.
    let big = (0..1000).map(|i| format!(r#""p{i}":[{{"a":[1,2,3]}}]"#)).collect::<Vec<_>>().join(",");
    let body = format!(
        r#"{{"parameters":{{{big},"timeout":5000}},"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"outputs":[{{"name":"y","parameters":{{"other":{{"deep":[1]}},"binary_data":true}}}}]}}"#
    );
    let request = decode_request(body.as_bytes(), None, Some(&signature)).unwrap();
    assert_eq!(request.timeout, Some(Duration::from_micros(5000)));
    assert!(request.binary.wants("y"));
    let body = br#"{"parameters":{"timeout":[1]},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;
    assert_eq!(
        decode_request(body, None, Some(&signature)).unwrap_err().to_string(),
        "parameter 'timeout': must be a whole number of microseconds"
    );
}

#[test]
fn names_come_from_the_signature_and_escaped_strings_decode_like_plain_ones() {
    let signature = Signature {
        inputs: vec![TensorSpec { name: "input".into(), datatype: DataType::Fp32, shape: vec![-1, 5] }],
        outputs: vec![],
    };
    let plain = br#"{"id":"r-1","inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#;
    // The same request with escapes in its strings: those are decoded into owned text, not borrowed.
    let escaped =
        br#"{"id":"r\u002d1","inputs":[{"name":"in\u0070ut","shape":[1,5],"datatype":"F\u005032","data":[1,2,3,4,5]}]}"#;
    for body in [&plain[..], &escaped[..]] {
        let request = decode_request(body, None, Some(&signature)).unwrap();
        assert_eq!(request.id.as_deref(), Some("r-1"));
        let input = &request.inputs[0];
        assert!(Arc::ptr_eq(&input.name, &signature.inputs[0].name), "the signature's name is shared, not copied");
        assert_eq!(input.shape.as_slice(), [1, 5]);
        assert!(!input.shape.spilled() && !request.inputs.spilled(), "a small request's lists are inline");
        assert_eq!(input.data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
    }
    // Without a signature the name is the request's own; a shape past four dimensions still decodes.
    let tensor = one_input(r#"{"name":"x","shape":[1,1,1,1,2],"datatype":"INT64","data":[1,2]}"#).unwrap();
    assert_eq!((&*tensor.name, tensor.shape.as_slice()), ("x", &[1, 1, 1, 1, 2][..]));
}

#[test]
fn the_reused_response_buffer_gives_the_same_bodies_small_or_large() {
    let small = [Tensor { name: "p".into(), shape: [1, 2][..].into(), data: TensorData::Fp32(vec![0.25, 0.75]) }];
    // Past the reused buffer's 64 KiB: handed over whole, and the buffer is not kept at that size.
    let large = [Tensor {
        name: "p".into(),
        shape: [1, 20_000][..].into(),
        data: TensorData::Fp32((0..20_000).map(|i| i as f32 / 3.0).collect()),
    }];
    let response = InferResponse { model_name: "m", model_version: "1", id: Some("r") };
    let json = BinaryOutputs::default();
    let raw = BinaryOutputs { default: true, overrides: vec![] };
    for outputs in [&small[..], &large[..], &small[..]] {
        for binary in [&json, &raw] {
            let (expected, expected_header) = encode_response(&response, outputs, binary);
            let (body, header) = encode_response_bytes(&response, outputs, binary);
            assert_eq!((&body[..], header), (&expected[..], expected_header));
        }
    }
    assert!(encode_response(&response, &large, &json).0.len() > 64 * 1024, "the large case must pass the limit");
}
