//! Scalar expressions through DataFusion: SQL → logical `Expr` (SqlToRel) → type
//! coercion (DataFusion's analyzer rule) → `PhysicalExpr` evaluated on Arrow batches.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::tree_node::TreeNode;
use datafusion_common::{DFSchema, DataFusionError, ScalarValue, TableReference};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::planner::ContextProvider;
use datafusion_expr::{
    AggregateUDF, ColumnarValue, Expr as LogicalExpr, ExprSchemable, HigherOrderUDF,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TableSource, TypeSignature,
    Volatility, WindowUDF,
};
use datafusion_optimizer::analyzer::type_coercion::TypeCoercionRewriter;
use datafusion_physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion_sql::planner::{PlannerContext, SqlToRel};
use sqlparser::ast::{Expr as SqlExpr, Value};
use tidewater_core::Result;

use crate::parse::Loc;

/// A compiled expression and its result type.
pub type Compiled = (Arc<dyn PhysicalExpr>, DataType);

/// The functions and settings expressions are planned with.
#[derive(Debug)]
pub struct Provider {
    functions: HashMap<String, Arc<ScalarUDF>>,
    options: ConfigOptions,
}

impl Default for Provider {
    fn default() -> Self {
        let mut functions = HashMap::new();
        let all = datafusion_functions::all_default_functions()
            .into_iter()
            .chain(std::iter::once(Arc::new(ScalarUDF::from(
                ToTimestampLtz::new(),
            ))));
        for f in all {
            for name in std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()) {
                functions.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        let mut options = ConfigOptions::default();
        // Flink identifiers are case-sensitive: do not lowercase them.
        options.sql_parser.enable_ident_normalization = false;
        Self { functions, options }
    }
}

impl ContextProvider for Provider {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        Err(DataFusionError::Plan(format!(
            "subqueries are not supported (table '{name}')"
        )))
    }
    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.get(&name.to_ascii_lowercase()).cloned()
    }
    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }
    fn get_aggregate_meta(&self, _name: &str) -> Option<Arc<AggregateUDF>> {
        None
    }
    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }
    fn get_variable_type(&self, _names: &[String]) -> Option<DataType> {
        None
    }
    fn options(&self) -> &ConfigOptions {
        &self.options
    }
    fn udf_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }
    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn udaf_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// DataFusion's message without its category prefix.
pub(crate) fn df_message(e: &DataFusionError) -> String {
    let s = e.strip_backtrace();
    for p in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            return rest.to_string();
        }
    }
    s
}

impl Provider {
    fn logical(&self, e: &SqlExpr, schema: &DFSchema) -> datafusion_common::Result<LogicalExpr> {
        let planner = SqlToRel::new(self);
        planner.sql_to_expr(e.clone(), schema, &mut PlannerContext::new())
    }

    /// Compiles `e` over `schema`; when `target` is given the result is cast to it.
    pub fn compile(
        &self,
        e: &SqlExpr,
        schema: &Schema,
        target: Option<&DataType>,
        loc: Loc,
    ) -> Result<Compiled> {
        let at = Loc::of(e, loc);
        let wrap = |err: DataFusionError| at.error(format!("{}: {}", e, df_message(&err)));
        let df = DFSchema::try_from(schema.clone()).map_err(wrap)?;
        let mut logical = self.logical(e, &df).map_err(wrap)?;
        if let Some(t) = target {
            logical = LogicalExpr::Cast(datafusion_expr::Cast::new(Box::new(logical), t.clone()));
        }
        let logical = logical
            .rewrite(&mut TypeCoercionRewriter::new(&df))
            .map_err(wrap)?
            .data;
        let ty = logical.get_type(&df).map_err(wrap)?;
        let phys = create_physical_expr(
            &logical,
            &df,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .map_err(wrap)?;
        Ok((phys, ty))
    }
}

/// Whether a value of type `from` may be written to a column of type `to` without an
/// explicit CAST (as in Flink: same type, numbers to numbers, NULL to anything).
pub fn implicitly_assignable(from: &DataType, to: &DataType) -> bool {
    from == to
        || from == &DataType::Null
        || (from.is_numeric() && to.is_numeric())
        || (matches!(from, DataType::Timestamp(..)) && matches!(to, DataType::Timestamp(..)))
        || (matches!(
            from,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && to == &DataType::Utf8)
}

impl Provider {
    /// Compiles `e` as the value of sink column `field`, refusing implicit conversions
    /// Flink would refuse (e.g. STRING into BIGINT).
    pub fn compile_into(
        &self,
        e: &SqlExpr,
        schema: &Schema,
        field: &arrow::datatypes::Field,
        loc: Loc,
    ) -> Result<Compiled> {
        let (_, from) = self.compile(e, schema, None, loc)?;
        if !implicitly_assignable(&from, field.data_type()) {
            return Err(Loc::of(e, loc).error(format!(
                "{e} is {} but sink column '{}' is {}; convert it with CAST({e} AS {})",
                crate::types::sql_name(&from),
                field.name(),
                crate::types::sql_name(field.data_type()),
                crate::types::sql_name(field.data_type())
            )));
        }
        self.compile(e, schema, Some(field.data_type()), loc)
    }
}

/// Milliseconds of `INTERVAL 'n' UNIT`.
pub fn interval_ms(e: &SqlExpr) -> std::result::Result<i64, String> {
    let bad = || format!("expected an interval such as INTERVAL '10' SECOND, got {e}");
    let SqlExpr::Interval(iv) = e else {
        return Err(bad());
    };
    let text = match iv.value.as_ref() {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let (num, unit_in_text) = match text.trim().split_once(char::is_whitespace) {
        Some((n, u)) => (n.to_string(), Some(u.trim().to_ascii_uppercase())),
        None => (text.trim().to_string(), None),
    };
    let unit = match (&iv.leading_field, unit_in_text) {
        (Some(f), None) => f.to_string().to_ascii_uppercase(),
        (None, Some(u)) => u,
        _ => return Err(bad()),
    };
    let scale = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1.0,
        "SECOND" => 1_000.0,
        "MINUTE" => 60_000.0,
        "HOUR" => 3_600_000.0,
        "DAY" => 86_400_000.0,
        _ => {
            return Err(format!(
                "interval unit {unit} is not supported; use MILLISECOND, SECOND, MINUTE, HOUR or DAY"
            ));
        }
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let ms = n * scale;
    // 10 000 years: larger windows are mistakes, and would overflow the time arithmetic.
    if !(0.0..=3.2e14).contains(&ms) {
        return Err(format!("interval {e} is out of range (0 to 10 000 years)"));
    }
    if ms.fract() != 0.0 || !ms.is_finite() {
        return Err(format!(
            "interval {e} is not a whole number of milliseconds"
        ));
    }
    Ok(ms as i64)
}

/// Flink's `TO_TIMESTAMP_LTZ(epoch, precision)`: epoch seconds (precision 0) or
/// milliseconds (precision 3, the default) to TIMESTAMP_LTZ(3).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToTimestampLtz {
    signature: Signature,
}

impl ToTimestampLtz {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for ToTimestampLtz {
    fn name(&self) -> &str {
        "to_timestamp_ltz"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion_common::Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion_common::Result<ColumnarValue> {
        let scale = match args.args.get(1) {
            None => 1,
            Some(ColumnarValue::Scalar(s)) => match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(0)) => 1000,
                ScalarValue::Int64(Some(3)) => 1,
                other => {
                    return Err(DataFusionError::Plan(format!(
                        "TO_TIMESTAMP_LTZ precision must be 0 or 3, got {other}"
                    )));
                }
            },
            Some(ColumnarValue::Array(_)) => {
                return Err(DataFusionError::Plan(
                    "TO_TIMESTAMP_LTZ precision must be a constant".into(),
                ));
            }
        };
        let Some(first) = args.args.first() else {
            return Err(DataFusionError::Plan(
                "TO_TIMESTAMP_LTZ needs an argument".into(),
            ));
        };
        let arr = first.clone().into_array(args.number_rows)?;
        let ints = cast(&arr, &DataType::Int64)?;
        if scale == 1 {
            // Epoch milliseconds already: reinterpret, no per-row work.
            return Ok(ColumnarValue::Array(cast(
                &ints,
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?));
        }
        let ints = ints
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("cast".into()))?;
        let ms: Int64Array = ints
            .iter()
            .map(|v| v.and_then(|v| v.checked_mul(scale)))
            .collect();
        Ok(ColumnarValue::Array(cast(
            &ms,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?))
    }
}
