//! The SQL dialect: generic, with backtick-quoted identifiers as in Flink, and the
//! `TABLE t [PARTITION BY k, ..]` argument of window table-valued functions.

use sqlparser::ast::{Expr, Ident};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};

/// Flink-flavoured generic SQL.
#[derive(Debug, Default)]
pub struct FlinkDialect;

/// Name of the marker tuple that stands for a `TABLE t` argument: the parsed form is
/// `(TABLE_ARG, t, (partition keys..))`.
pub const TABLE_ARG: &str = "\u{1}table";

impl Dialect for FlinkDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if !parser.parse_keyword(Keyword::TABLE) {
            return None;
        }
        Some((|| {
            let name = parser.parse_identifier()?;
            let keys = if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
                parser.parse_comma_separated(Parser::parse_expr)?
            } else {
                Vec::new()
            };
            Ok(Expr::Tuple(vec![
                Expr::Identifier(Ident::new(TABLE_ARG)),
                Expr::Identifier(name),
                Expr::Tuple(keys),
            ]))
        })())
    }
}
