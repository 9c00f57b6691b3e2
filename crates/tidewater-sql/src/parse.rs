//! Job files: `SET`, `CREATE TABLE` and `INSERT INTO` statements separated by `;`.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use sqlparser::ast::{Expr, Ident, Query, Spanned, Statement, TableObject};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token};
use tidewater_core::{Error, Result};

use crate::dialect::FlinkDialect;
use crate::types::arrow_type;

/// A place in the job file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

impl From<Location> for Loc {
    fn from(l: Location) -> Self {
        Loc {
            line: l.line,
            column: l.column,
        }
    }
}

impl Loc {
    /// An SQL error at this place.
    pub fn error(self, message: impl Into<String>) -> Error {
        Error::Sql {
            line: self.line.max(1),
            column: self.column.max(1),
            message: message.into(),
        }
    }

    /// The location of `e`, or `fallback` when sqlparser has none.
    pub fn of(e: &impl Spanned, fallback: Loc) -> Loc {
        let s = e.span().start;
        if s.line == 0 { fallback } else { s.into() }
    }
}

/// A column of a `CREATE TABLE`.
#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read from the source / written to the sink.
    Physical(DataType),
    /// `name AS expr`, computed from the physical columns.
    Computed(Box<Expr>),
}

/// One column.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// Its name.
    pub name: String,
    /// Physical or computed.
    pub kind: ColumnKind,
    /// Where it is declared.
    pub loc: Loc,
}

/// `WATERMARK FOR column AS column - INTERVAL ..`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// How far the watermark trails the largest event time seen, in ms.
    pub delay_ms: i64,
    /// Where it is declared.
    pub loc: Loc,
}

/// A `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Columns in declared order.
    pub columns: Vec<ColumnDef>,
    /// The watermark, if declared.
    pub watermark: Option<WatermarkDef>,
    /// The `WITH` options.
    pub options: BTreeMap<String, String>,
    /// Where the statement starts.
    pub loc: Loc,
}

/// The `INSERT INTO sink <query>`.
#[derive(Debug, Clone)]
pub struct InsertDef {
    /// The sink table.
    pub sink: String,
    /// The query.
    pub query: Box<Query>,
    /// Where the statement starts.
    pub loc: Loc,
}

/// A parsed job file.
#[derive(Debug, Clone, Default)]
pub struct JobFile {
    /// `SET 'key' = 'value'` in order, with locations.
    pub settings: Vec<(String, String, Loc)>,
    /// Tables by declaration order.
    pub tables: Vec<TableDef>,
    /// The one `INSERT`.
    pub insert: Option<InsertDef>,
}

impl JobFile {
    /// The table called `name` (case-insensitive, as Flink's default catalog is not).
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name).or_else(|| {
            self.tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
        })
    }
}

/// Turns sqlparser's "... at Line: L, Column: C" into a located error.
pub(crate) fn parser_error(e: ParserError, fallback: Loc) -> Error {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".into(),
    };
    let (text, loc) = match msg.rfind(" at Line: ") {
        Some(i) => {
            let tail = &msg[i + " at Line: ".len()..];
            let mut nums = tail
                .split(", Column: ")
                .map(|s| s.trim().parse::<u64>().ok());
            match (nums.next().flatten(), nums.next().flatten()) {
                (Some(line), Some(column)) => (msg[..i].to_string(), Loc { line, column }),
                _ => (msg.clone(), fallback),
            }
        }
        None => (msg, fallback),
    };
    let text = text
        .strip_prefix("sql parser error: ")
        .unwrap_or(&text)
        .to_string();
    loc.error(text)
}

/// Parses a job file.
pub fn parse_job(sql: &str) -> Result<JobFile> {
    let dialect = FlinkDialect;
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| parser_error(e, Loc::default()))?;
    let mut job = JobFile::default();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        let tok = p.peek_token();
        if tok.token == Token::EOF {
            break;
        }
        let loc: Loc = tok.span.start.into();
        if p.parse_keyword(Keyword::SET) {
            let (k, v) = parse_set(&mut p).map_err(|e| parser_error(e, loc))?;
            job.settings.push((k, v, loc));
        } else if p.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]) {
            let t = parse_create_table(&mut p, loc)?;
            if job.tables.iter().any(|x| x.name == t.name) {
                return Err(loc.error(format!("table '{}' is declared twice", t.name)));
            }
            job.tables.push(t);
        } else {
            let stmt = p.parse_statement().map_err(|e| parser_error(e, loc))?;
            let insert = match stmt {
                Statement::Insert(ins) => ins,
                other => {
                    let kind = other
                        .to_string()
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    return Err(loc.error(format!(
                        "'{kind} ...' is not supported in a job file; use SET, CREATE TABLE and INSERT INTO ... SELECT"
                    )));
                }
            };
            if job.insert.is_some() {
                return Err(loc.error(
                    "a job file holds one INSERT INTO; put further queries in their own job files",
                ));
            }
            let sink = match &insert.table {
                TableObject::TableName(n) => n.to_string().trim_matches('`').to_string(),
                other => return Err(loc.error(format!("cannot insert into {other}; name a table"))),
            };
            let query = insert
                .source
                .ok_or_else(|| loc.error("INSERT INTO needs a SELECT query"))?;
            job.insert = Some(InsertDef { sink, query, loc });
        }
        let next = p.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            return Err(Loc::from(next.span.start).error(format!(
                "expected ';' after the statement, found {}",
                next.token
            )));
        }
    }
    Ok(job)
}

fn literal_or_ident(p: &mut Parser) -> std::result::Result<String, ParserError> {
    match p.peek_token().token {
        Token::SingleQuotedString(_) => p.parse_literal_string(),
        _ => Ok(p.parse_identifier()?.value),
    }
}

fn parse_set(p: &mut Parser) -> std::result::Result<(String, String), ParserError> {
    let key = literal_or_ident(p)?;
    p.expect_token(&Token::Eq)?;
    let value = literal_or_ident(p)?;
    Ok((key, value))
}

fn parse_create_table(p: &mut Parser, loc: Loc) -> Result<TableDef> {
    let perr = |e| parser_error(e, loc);
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name: Ident = p.parse_identifier().map_err(perr)?;
    p.expect_token(&Token::LParen).map_err(perr)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    loop {
        let at: Loc = p.peek_token().span.start.into();
        if is_watermark_clause(p) {
            p.next_token();
            p.expect_keyword(Keyword::FOR).map_err(perr)?;
            let column = p.parse_identifier().map_err(perr)?.value;
            p.expect_keyword(Keyword::AS).map_err(perr)?;
            let expr = p.parse_expr().map_err(perr)?;
            let delay_ms = watermark_delay(&expr, &column, at)?;
            watermark = Some(WatermarkDef {
                column,
                delay_ms,
                loc: at,
            });
        } else if p.parse_keyword(Keyword::PRIMARY) {
            return Err(
                at.error("PRIMARY KEY is not supported: Tidewater tables are append-only streams")
            );
        } else {
            let col = p.parse_identifier().map_err(perr)?;
            let kind = if p.parse_keyword(Keyword::AS) {
                ColumnKind::Computed(Box::new(p.parse_expr().map_err(perr)?))
            } else {
                let t = p.parse_data_type().map_err(perr)?;
                let arrow =
                    arrow_type(&t).map_err(|m| at.error(format!("column '{}': {m}", col.value)))?;
                // Flink allows NOT NULL / NULL after the type; we accept and ignore them.
                if !p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    let _ = p.parse_keyword(Keyword::NULL);
                }
                if p.parse_keyword(Keyword::METADATA) {
                    return Err(at.error("METADATA columns are not supported yet"));
                }
                ColumnKind::Physical(arrow)
            };
            if columns.iter().any(|c: &ColumnDef| c.name == col.value) {
                return Err(at.error(format!("column '{}' is declared twice", col.value)));
            }
            columns.push(ColumnDef {
                name: col.value,
                kind,
                loc: at,
            });
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(perr)?;
        break;
    }
    let mut options = BTreeMap::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen).map_err(perr)?;
        loop {
            let at: Loc = p.peek_token().span.start.into();
            let k = p.parse_literal_string().map_err(perr)?;
            p.expect_token(&Token::Eq).map_err(perr)?;
            let v = p.parse_literal_string().map_err(perr)?;
            if options.insert(k.clone(), v).is_some() {
                return Err(at.error(format!("option '{k}' is given twice")));
            }
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::RParen).map_err(perr)?;
            break;
        }
    } else {
        return Err(loc.error(format!(
            "table '{}' needs WITH ('connector' = '...', ...)",
            name.value
        )));
    }
    if let Some(w) = &watermark
        && !columns.iter().any(|c| c.name == w.column)
    {
        return Err(w.loc.error(format!(
            "WATERMARK FOR '{}': the table has no such column",
            w.column
        )));
    }
    Ok(TableDef {
        name: name.value,
        columns,
        watermark,
        options,
        loc,
    })
}

/// `WATERMARK FOR` ahead (WATERMARK is no keyword of sqlparser's, so look at the words).
fn is_watermark_clause(p: &Parser) -> bool {
    let [a, b] = p.peek_tokens();
    matches!((a, b), (Token::Word(a), Token::Word(b))
        if a.value.eq_ignore_ascii_case("WATERMARK") && b.keyword == Keyword::FOR)
}

/// `col` or `col - INTERVAL 'n' UNIT` → the delay in ms.
fn watermark_delay(e: &Expr, column: &str, at: Loc) -> Result<i64> {
    use sqlparser::ast::BinaryOperator;
    let unsupported = || {
        at.error(format!(
            "WATERMARK FOR {column} AS {e}: only '{column}' or '{column} - INTERVAL 'n' SECOND' (or MILLISECOND, MINUTE, HOUR) is supported"
        ))
    };
    let is_col = |x: &Expr| matches!(x, Expr::Identifier(i) if i.value == column);
    match e {
        x if is_col(x) => Ok(0),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_col(left) => crate::exprs::interval_ms(right)
            .map_err(|m| at.error(m))
            .and_then(|ms| if ms < 0 { Err(unsupported()) } else { Ok(ms) }),
        Expr::Nested(inner) => watermark_delay(inner, column, at),
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "
-- the classic job
SET 'parallelism.default' = '2';
CREATE TABLE events (
  `key` STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'x.csv', 'format' = 'csv');
INSERT INTO out SELECT window_start, `key`, SUM(`value`)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, `key`;
";

    #[test]
    fn parses_flink_ddl_and_window_tvf() -> Result<()> {
        let job = parse_job(JOB)?;
        assert_eq!(job.settings[0].0, "parallelism.default");
        let t = job
            .table("events")
            .ok_or_else(|| Error::runtime("no table"))?;
        assert_eq!(t.columns.len(), 4);
        assert!(matches!(t.columns[3].kind, ColumnKind::Computed(_)));
        assert_eq!(t.watermark.as_ref().map(|w| w.delay_ms), Some(2000));
        assert_eq!(
            t.options.get("connector").map(String::as_str),
            Some("filesystem")
        );
        assert_eq!(job.insert.as_ref().map(|i| i.sink.as_str()), Some("out"));
        Ok(())
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = parse_job("CREATE TABLE t (a BIGINT) WITH ('connector' = 'print');\nINSERT INTO t SELEC a FROM t;").err();
        match err {
            Some(Error::Sql { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected an SQL error, got {other:?}"),
        }
    }
}
