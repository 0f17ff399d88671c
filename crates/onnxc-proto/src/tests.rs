//! Encoding/decoding sanity checks for the generated types.

use super::*;
use attribute_proto::AttributeType;
use tensor_proto::DataType;

fn tensor_type(elem: DataType, dims: &[tensor_shape_proto::dimension::Value]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem as i32),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|v| tensor_shape_proto::Dimension { value: Some(v.clone()), ..Default::default() })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

fn value_info(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto { name: Some(name.to_owned()), r#type: Some(ty), ..Default::default() }
}

fn sample_model() -> ModelProto {
    use tensor_shape_proto::dimension::Value as Dim;

    let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let initializer = TensorProto {
        name: Some("w".to_owned()),
        dims: vec![2, 2],
        data_type: Some(DataType::Float as i32),
        raw_data: Some(weights),
        ..Default::default()
    };

    let node = NodeProto {
        name: Some("gemm0".to_owned()),
        op_type: Some("Gemm".to_owned()),
        domain: Some(String::new()),
        input: vec!["x".to_owned(), "w".to_owned()],
        output: vec!["y".to_owned()],
        attribute: vec![
            AttributeProto {
                name: Some("alpha".to_owned()),
                r#type: Some(AttributeType::Float as i32),
                f: Some(0.5),
                ..Default::default()
            },
            AttributeProto {
                name: Some("transB".to_owned()),
                r#type: Some(AttributeType::Int as i32),
                i: Some(1),
                ..Default::default()
            },
            AttributeProto {
                name: Some("perm".to_owned()),
                r#type: Some(AttributeType::Ints as i32),
                ints: vec![1, 0, -1],
                ..Default::default()
            },
            AttributeProto {
                name: Some("mode".to_owned()),
                r#type: Some(AttributeType::String as i32),
                s: Some(b"constant".to_vec()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };

    ModelProto {
        ir_version: Some(Version::IrVersion as i64),
        producer_name: Some("onnxc-proto-test".to_owned()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(21) }],
        graph: Some(GraphProto {
            name: Some("g".to_owned()),
            node: vec![node],
            initializer: vec![initializer],
            input: vec![value_info(
                "x",
                tensor_type(DataType::Float, &[Dim::DimParam("N".to_owned()), Dim::DimValue(2)]),
            )],
            output: vec![value_info(
                "y",
                tensor_type(DataType::Float, &[Dim::DimParam("N".to_owned()), Dim::DimValue(2)]),
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn model_round_trip() {
    let model = sample_model();
    let bytes = model.encode_to_vec();
    let decoded = ModelProto::decode(bytes.as_slice()).expect("decode");
    assert_eq!(decoded, model);

    let graph = decoded.graph.as_ref().expect("graph");
    let node = &graph.node[0];
    assert_eq!(node.op_type(), "Gemm");
    assert_eq!(node.attribute.len(), 4);
    assert_eq!(node.attribute[0].r#type(), AttributeType::Float);
    assert_eq!(node.attribute[0].f(), 0.5);
    assert_eq!(node.attribute[1].i(), 1);
    assert_eq!(node.attribute[2].ints, [1, 0, -1]);
    assert_eq!(node.attribute[3].s(), b"constant");

    let init = &graph.initializer[0];
    assert_eq!(DataType::try_from(init.data_type()), Ok(DataType::Float));
    assert_eq!(init.dims, [2, 2]);
    let floats: Vec<f32> = init.raw_data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(init.data_location(), tensor_proto::DataLocation::Default);
    assert!(init.external_data.is_empty());
}

/// A model serialized by the upstream `onnx` Python package (1.23.2), built with
///
/// ```text
/// w = numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32), name="w")
/// node = helper.make_node("Mul", ["x", "w"], ["y"], name="mul0",
///                         alpha=0.5, axes=[0, -1], mode="fast")
/// g = helper.make_graph([node], "g",
///         [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
///         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])], [w])
/// m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], producer_name="py")
/// m.ir_version = 10
/// ```
///
/// Note that the proto2 repeated scalars (`axes`, `dims`) are encoded *unpacked* here.
const UPSTREAM_MODEL_HEX: &str = "\
080a120270793a89010a4e0a01780a01771201791a046d756c3022034d756c2a0f0a05616c706861150000003fa0\
01012a160a0461786573400040ffffffffffffffffff01a001072a0f0a046d6f6465220466617374a001031201672a\
11080210014201774a080000803f000000405a0f0a0178120a0a08080112040a02080262100a0179120b0a09080112\
050a0312014e42040a001015";

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn decode_upstream_serialized_model() {
    let bytes = hex_decode(UPSTREAM_MODEL_HEX);
    let model = ModelProto::decode(bytes.as_slice()).expect("decode");
    assert_eq!(model.ir_version(), 10);
    assert_eq!(model.producer_name(), "py");
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].domain(), "");
    assert_eq!(model.opset_import[0].version(), 21);

    let graph = model.graph.as_ref().expect("graph");
    assert_eq!(graph.name(), "g");
    let node = &graph.node[0];
    assert_eq!(node.name(), "mul0");
    assert_eq!(node.op_type(), "Mul");
    assert_eq!(node.input, ["x", "w"]);
    assert_eq!(node.output, ["y"]);
    let attrs: Vec<(&str, AttributeType)> = node.attribute.iter().map(|a| (a.name(), a.r#type())).collect();
    assert_eq!(
        attrs,
        [("alpha", AttributeType::Float), ("axes", AttributeType::Ints), ("mode", AttributeType::String),]
    );
    assert_eq!(node.attribute[0].f(), 0.5);
    assert_eq!(node.attribute[1].ints, [0, -1]);
    assert_eq!(node.attribute[2].s(), b"fast");

    let w = &graph.initializer[0];
    assert_eq!(w.name(), "w");
    assert_eq!(w.dims, [2]);
    assert_eq!(DataType::try_from(w.data_type()), Ok(DataType::Float));
    assert_eq!(w.raw_data(), [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);

    let Some(type_proto::Value::TensorType(t)) = &graph.output[0].r#type.as_ref().unwrap().value else {
        panic!("expected tensor type");
    };
    assert_eq!(t.elem_type(), DataType::Float as i32);
    let dim = &t.shape.as_ref().unwrap().dim[0];
    assert_eq!(dim.value, Some(tensor_shape_proto::dimension::Value::DimParam("N".to_owned())));

    // Re-encoding with prost and decoding again must preserve the model.
    let again = ModelProto::decode(model.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(again, model);
}

#[test]
fn newer_data_types_are_present() {
    for (dt, code) in [
        (DataType::Float8e4m3fn, 17),
        (DataType::Float8e5m2fnuz, 20),
        (DataType::Uint4, 21),
        (DataType::Int4, 22),
        (DataType::Float4e2m1, 23),
        (DataType::Float8e8m0, 24),
        (DataType::Int2, 26),
    ] {
        assert_eq!(dt as i32, code);
        assert_eq!(DataType::try_from(code), Ok(dt));
    }
    assert_eq!(DataType::from_str_name("FLOAT4E2M1"), Some(DataType::Float4e2m1));
}
