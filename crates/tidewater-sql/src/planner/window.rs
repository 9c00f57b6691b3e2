//! Planning window TVF aggregations: `TABLE(HOP(TABLE t, DESCRIPTOR(ts), slide, size))`
//! and friends, `GROUP BY window_start, window_end, keys`.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::Column;
use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    VisitMut, VisitorMut,
};
use tidewater_core::{Error, Result};
use tidewater_runtime::{Chain, Operator, SourceStage};
use tidewater_window::{
    AggKind, AggSpec, SessionWindowOperator, SlicedWindowOperator, WindowInput, WindowSpec,
};

use super::PlanContext;
use super::source::plan_source;
use crate::dialect::TABLE_ARG;
use crate::exprs::interval_ms;
use crate::operators::ProjectOperator;
use crate::parse::Loc;

pub(crate) struct WindowPlan {
    pub source: SourceStage,
    pub window_chains: Vec<Chain>,
    pub key_count: usize,
    pub key_names: Vec<String>,
    pub notes: Vec<String>,
    pub table: super::SourceTable,
}

const AGGREGATES: &[&str] = &["COUNT", "SUM", "MIN", "MAX", "AVG"];
const UNSUPPORTED_AGGREGATES: &[&str] = &[
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "FIRST_VALUE",
    "LAST_VALUE",
    "LISTAGG",
    "COLLECT",
];

fn function_name(f: &Function) -> String {
    f.name.to_string().to_ascii_uppercase()
}

fn plain_args(f: &Function, loc: Loc) -> Result<Vec<&Expr>> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(loc.error(format!(
                    "argument {other} of {} is not supported here",
                    f.name
                ))),
            })
            .collect(),
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::Subquery(_) => Err(loc.error("subqueries are not supported")),
    }
}

/// True if any of `exprs` calls an aggregate function.
pub(crate) fn contains_aggregate<'a>(exprs: impl Iterator<Item = &'a Expr>) -> bool {
    exprs.into_iter().any(|e| {
        let mut found = false;
        let mut e = e.clone();
        let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
            if let Expr::Function(f) = x {
                found |= AGGREGATES.contains(&function_name(f).as_str());
            }
            ControlFlow::<()>::Continue(())
        });
        found
    })
}

/// One distinct aggregate call of the query.
struct AggCall {
    kind: AggKind,
    arg: Option<Expr>,
    text: String,
}

/// Rewrites SELECT expressions to refer to the window operator's output.
struct Rewriter<'a> {
    keys: &'a [Expr],
    aggs: Vec<AggCall>,
    loc: Loc,
}

impl Rewriter<'_> {
    fn aggregate(&mut self, f: &Function) -> Result<Option<usize>> {
        let name = function_name(f);
        let at = Loc::of(f, self.loc);
        if UNSUPPORTED_AGGREGATES.contains(&name.as_str()) {
            return Err(at.error(format!("aggregate {name} is not supported yet; use COUNT, SUM, MIN, MAX, AVG or COUNT(DISTINCT ..)")));
        }
        if !AGGREGATES.contains(&name.as_str()) {
            return Ok(None);
        }
        if f.filter.is_some() || f.over.is_some() {
            return Err(at.error(format!(
                "{name} with FILTER or OVER is not supported; use a WHERE clause"
            )));
        }
        let (distinct, args) = match &f.args {
            FunctionArguments::List(l) => (
                matches!(l.duplicate_treatment, Some(DuplicateTreatment::Distinct)),
                &l.args,
            ),
            _ => return Err(at.error(format!("{name} needs one argument"))),
        };
        let arg = match args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "COUNT" && !distinct => {
                None
            }
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e.clone()),
            _ => {
                return Err(at.error(format!(
                    "{name} takes exactly one argument (COUNT also takes *)"
                )));
            }
        };
        let kind = match (name.as_str(), distinct, &arg) {
            ("COUNT", false, None) => AggKind::CountStar,
            ("COUNT", false, Some(_)) => AggKind::Count,
            ("COUNT", true, _) => AggKind::CountDistinct,
            (_, true, _) => {
                return Err(at.error(format!(
                    "{name}(DISTINCT ..) is not supported; only COUNT(DISTINCT ..)"
                )));
            }
            ("SUM", ..) => AggKind::Sum,
            ("MIN", ..) => AggKind::Min,
            ("MAX", ..) => AggKind::Max,
            _ => AggKind::Avg,
        };
        let text = f.to_string();
        if let Some(i) = self
            .aggs
            .iter()
            .position(|a| a.kind == kind && a.arg == arg)
        {
            return Ok(Some(i));
        }
        self.aggs.push(AggCall { kind, arg, text });
        Ok(Some(self.aggs.len() - 1))
    }
}

impl VisitorMut for Rewriter<'_> {
    type Break = Error;

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<Error> {
        if let Some(i) = self.keys.iter().position(|k| k == e) {
            *e = Expr::Identifier(Ident::new(format!("__key{i}")));
            return ControlFlow::Continue(());
        }
        if let Expr::Identifier(id) = e {
            if id.value.eq_ignore_ascii_case("window_time") {
                // Flink's window_time is the last millisecond of the window.
                *e = Expr::BinaryOp {
                    left: Box::new(Expr::Identifier(Ident::new("window_end"))),
                    op: sqlparser::ast::BinaryOperator::Minus,
                    right: Box::new(Expr::Interval(sqlparser::ast::Interval {
                        value: Box::new(Expr::value(sqlparser::ast::Value::SingleQuotedString(
                            "1".into(),
                        ))),
                        leading_field: Some(sqlparser::ast::DateTimeField::Millisecond),
                        leading_precision: None,
                        last_field: None,
                        fractional_seconds_precision: None,
                    })),
                };
            } else if id.value.eq_ignore_ascii_case("window_start")
                || id.value.eq_ignore_ascii_case("window_end")
            {
                id.value = id.value.to_ascii_lowercase();
            }
            return ControlFlow::Continue(());
        }
        if let Expr::Function(f) = e {
            match self.aggregate(f) {
                Ok(Some(i)) => *e = Expr::Identifier(Ident::new(format!("__agg{i}"))),
                Ok(None) => {}
                Err(err) => return ControlFlow::Break(err),
            }
        }
        ControlFlow::Continue(())
    }
}

/// Identifiers of `e` that are not columns of the window output.
fn ungrouped_columns(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    let mut e = e.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        match x {
            Expr::Identifier(id)
                if !(id.value.starts_with("__key")
                    || id.value.starts_with("__agg")
                    || id.value == "window_start"
                    || id.value == "window_end") =>
            {
                out.push(id.value.clone())
            }
            Expr::CompoundIdentifier(ids) => out.push(
                ids.iter()
                    .map(|i| i.value.as_str())
                    .collect::<Vec<_>>()
                    .join("."),
            ),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

struct Tvf {
    table: String,
    partition_keys: Vec<Expr>,
    descriptor: String,
    spec: WindowSpec,
}

fn parse_tvf(e: &Expr, loc: Loc) -> Result<Tvf> {
    let usage = "use TUMBLE(TABLE t, DESCRIPTOR(ts), size), HOP(TABLE t, DESCRIPTOR(ts), slide, size), CUMULATE(TABLE t, DESCRIPTOR(ts), step, max_size) or SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)";
    let Expr::Function(f) = e else {
        return Err(loc.error(format!("TABLE({e}) is not a window function; {usage}")));
    };
    let at = Loc::of(f, loc);
    let name = function_name(f);
    let args = plain_args(f, at)?;
    let (table, partition_keys) = match args.first() {
        Some(Expr::Tuple(parts)) => match parts.as_slice() {
            [Expr::Identifier(m), Expr::Identifier(t), Expr::Tuple(keys)]
                if m.value == TABLE_ARG =>
            {
                (t.value.clone(), keys.clone())
            }
            _ => {
                return Err(at.error(format!(
                    "{name}: the first argument must be TABLE <name>; {usage}"
                )));
            }
        },
        _ => {
            return Err(at.error(format!(
                "{name}: the first argument must be TABLE <name>; {usage}"
            )));
        }
    };
    let descriptor = match args.get(1) {
        Some(Expr::Function(d)) if function_name(d) == "DESCRIPTOR" => {
            match plain_args(d, at)?.as_slice() {
                [Expr::Identifier(c)] => c.value.clone(),
                _ => return Err(at.error("DESCRIPTOR takes one column name")),
            }
        }
        _ => {
            return Err(at.error(format!(
                "{name}: the second argument must be DESCRIPTOR(<event-time column>); {usage}"
            )));
        }
    };
    let iv = |i: usize| -> Result<i64> {
        let e = args
            .get(i)
            .ok_or_else(|| at.error(format!("{name} is missing an interval argument; {usage}")))?;
        interval_ms(e).map_err(|m| Loc::of(*e, at).error(m))
    };
    let want = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            Err(at.error(format!(
                "{name} takes {n} arguments, got {}; {usage}",
                args.len()
            )))
        }
    };
    let spec = match name.as_str() {
        "TUMBLE" => {
            want(3)?;
            WindowSpec::Tumble { size: iv(2)? }
        }
        "HOP" => {
            want(4)?;
            WindowSpec::Hop {
                slide: iv(2)?,
                size: iv(3)?,
            }
        }
        "CUMULATE" => {
            want(4)?;
            WindowSpec::Cumulate {
                step: iv(2)?,
                max_size: iv(3)?,
            }
        }
        "SESSION" => {
            want(3)?;
            WindowSpec::Session { gap: iv(2)? }
        }
        other => return Err(at.error(format!("unknown window function {other}; {usage}"))),
    };
    spec.validate().map_err(|e| at.error(e.to_string()))?;
    if !partition_keys.is_empty() && !matches!(spec, WindowSpec::Session { .. }) {
        return Err(at.error("PARTITION BY is only supported for SESSION windows"));
    }
    Ok(Tvf {
        table,
        partition_keys,
        descriptor,
        spec,
    })
}

pub(crate) fn plan_window(
    ctx: &PlanContext<'_>,
    tvf: &Expr,
    selection: Option<&Expr>,
    group_by: &[Expr],
    items: &[(Expr, Option<String>)],
    sink_schema: &SchemaRef,
) -> Result<WindowPlan> {
    let loc = ctx.loc;
    let tvf = parse_tvf(tvf, loc)?;
    let src = plan_source(ctx, &tvf.table, selection)?;
    let (ts_idx, ts_name) = src.time_column.clone().ok_or_else(|| {
        loc.error(format!(
            "table '{}' has no event time; declare WATERMARK FOR <column> AS <column> - INTERVAL 'n' SECOND",
            tvf.table
        ))
    })?;
    if tvf.descriptor != ts_name {
        return Err(loc.error(format!(
            "DESCRIPTOR({}) must name the event-time column '{ts_name}' (the one with the WATERMARK)",
            tvf.descriptor
        )));
    }
    let is_window_col =
        |e: &Expr, n: &str| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(n));
    if !group_by.iter().any(|e| is_window_col(e, "window_start"))
        || !group_by.iter().any(|e| is_window_col(e, "window_end"))
    {
        return Err(
            loc.error("a window aggregation must GROUP BY window_start, window_end (and any keys)")
        );
    }
    let keys: Vec<Expr> = group_by
        .iter()
        .filter(|e| {
            !is_window_col(e, "window_start")
                && !is_window_col(e, "window_end")
                && !is_window_col(e, "window_time")
        })
        .cloned()
        .collect();
    if !tvf.partition_keys.is_empty() && tvf.partition_keys != keys {
        return Err(loc.error(format!(
            "SESSION PARTITION BY ({}) must match the GROUP BY keys ({})",
            tvf.partition_keys
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    // Keys and aggregate arguments are computed on the source side.
    let mut input_exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut input_fields = Vec::new();
    let mut key_fields = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (p, t) = ctx.provider.compile(k, &src.schema, None, loc)?;
        input_exprs.push(p);
        let f = Field::new(format!("__key{i}"), t, true);
        input_fields.push(f.clone());
        key_fields.push(f);
    }
    input_exprs.push(Arc::new(Column::new(&ts_name, ts_idx)));
    input_fields.push(Field::new(
        "__ts",
        src.schema.field(ts_idx).data_type().clone(),
        true,
    ));

    let mut rw = Rewriter {
        keys: &keys,
        aggs: Vec::new(),
        loc,
    };
    let mut rewritten = Vec::new();
    for (e, _) in items {
        let mut e = e.clone();
        if let ControlFlow::Break(err) = e.visit(&mut rw) {
            return Err(err);
        }
        if let Some(c) = ungrouped_columns(&e).first() {
            return Err(Loc::of(&e, loc).error(format!(
                "column '{c}' is neither grouped nor aggregated; add it to GROUP BY or use it inside an aggregate"
            )));
        }
        rewritten.push(e);
    }
    let mut aggs = Vec::new();
    for a in &rw.aggs {
        let (arg, arg_type) = match &a.arg {
            None => (None, DataType::Int64),
            Some(e) => {
                let (p, t) = ctx.provider.compile(e, &src.schema, None, loc)?;
                input_exprs.push(p);
                input_fields.push(Field::new(
                    format!("__arg{}", input_fields.len()),
                    t.clone(),
                    true,
                ));
                (Some(input_fields.len() - 1), t)
            }
        };
        let spec = AggSpec {
            kind: a.kind,
            arg,
            arg_type,
        };
        spec.validate()
            .map_err(|e| loc.error(format!("{}: {e}", a.text)))?;
        aggs.push(spec);
    }
    let input_schema = Arc::new(Schema::new(input_fields));
    let window_input = WindowInput {
        key_columns: keys.len(),
        key_fields,
        time_column: keys.len(),
        aggs,
        metrics: ctx.opts.metrics.clone(),
    };
    let window_out = window_input.output_schema();
    let post = rewritten
        .iter()
        .zip(sink_schema.fields())
        .map(|(e, f)| {
            ctx.provider
                .compile_into(e, &window_out, f, loc)
                .map(|c| c.0)
        })
        .collect::<Result<Vec<_>>>()?;

    let mut notes = src.notes;
    notes.push(format!(
        "Window  {} on '{}' by ({}); aggregates: {}",
        tvf.spec.describe(),
        ts_name,
        keys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        rw.aggs
            .iter()
            .map(|a| a.text.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut source_chains = src.chains;
    for c in &mut source_chains {
        c.push(Box::new(ProjectOperator::new(
            input_exprs.clone(),
            input_schema.clone(),
            "keys, event time, aggregate arguments",
        )));
    }
    let window_chains = (0..ctx.parallelism)
        .map(|_| -> Result<Chain> {
            let op: Box<dyn Operator> = match tvf.spec {
                WindowSpec::Session { gap } => {
                    Box::new(SessionWindowOperator::new(gap, window_input.clone())?)
                }
                spec => Box::new(SlicedWindowOperator::new(spec, window_input.clone())?),
            };
            Ok(vec![
                op,
                Box::new(ProjectOperator::new(
                    post.clone(),
                    sink_schema.clone(),
                    "select",
                )),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(WindowPlan {
        source: SourceStage {
            name: src.name,
            readers: src.readers,
            chains: source_chains,
        },
        window_chains,
        key_count: keys.len(),
        key_names: keys.iter().map(ToString::to_string).collect(),
        notes,
        table: src.table,
    })
}
