//! The SQL dialect: generic, with backtick-quoted identifiers as in Flink, and the
//! `TABLE t [PARTITION BY k, ..]` argument of window table-valued functions.

use sqlparser::ast::{Expr, Ident};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

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
            let mut keys = Vec::new();
            if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
                // The key list ends where the next window argument (DESCRIPTOR) begins.
                loop {
                    keys.push(parser.parse_expr()?);
                    let [comma, next] = parser.peek_tokens();
                    let descriptor = matches!(&next, Token::Word(w) if w.value.eq_ignore_ascii_case("DESCRIPTOR"));
                    if comma != Token::Comma || descriptor {
                        break;
                    }
                    parser.next_token();
                }
            }
            Ok(Expr::Tuple(vec![
                Expr::Identifier(Ident::new(TABLE_ARG)),
                Expr::Identifier(name),
                Expr::Tuple(keys),
            ]))
        })())
    }
}
