//! Flink SQL types and their Arrow counterparts.

use arrow::datatypes::{DataType, TimeUnit};
use sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};

/// The Arrow type of a declared column type, or a message listing what is supported.
pub fn arrow_type(t: &SqlType) -> Result<DataType, String> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    Ok(match t {
        SqlType::String(_) | SqlType::Varchar(_) | SqlType::Text | SqlType::Char(_) => {
            DataType::Utf8
        }
        SqlType::BigInt(_) | SqlType::Int64 => DataType::Int64,
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int32 => DataType::Int32,
        SqlType::SmallInt(_) => DataType::Int16,
        SqlType::TinyInt(_) => DataType::Int8,
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float64 => DataType::Float64,
        SqlType::Float(_) | SqlType::Real | SqlType::Float32 => DataType::Float32,
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::Date => DataType::Date32,
        SqlType::Timestamp(p, tz)
            if matches!(p, None | Some(3)) && !matches!(tz, TimezoneInfo::WithTimeZone) =>
        {
            ts
        }
        SqlType::Custom(name, args) => {
            let n = name.to_string().to_ascii_uppercase();
            match (n.as_str(), args.as_slice()) {
                ("TIMESTAMP_LTZ", []) => ts,
                ("TIMESTAMP_LTZ", [p]) if p == "3" => ts,
                ("STRING", []) => DataType::Utf8,
                _ => return Err(unsupported(t)),
            }
        }
        SqlType::Decimal(ExactNumberInfo::None) => DataType::Float64,
        _ => return Err(unsupported(t)),
    })
}

fn unsupported(t: &SqlType) -> String {
    format!(
        "type {t} is not supported; use STRING, BIGINT, INT, SMALLINT, TINYINT, DOUBLE, FLOAT, BOOLEAN, DATE, TIMESTAMP(3) or TIMESTAMP_LTZ(3)"
    )
}

/// The Flink SQL name of an Arrow type, for messages.
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => "TIMESTAMP(3)".into(),
        other => other.to_string(),
    }
}
