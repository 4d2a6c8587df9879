//! Rule functions simple enough to evaluate without Rhai.
//!
//! Most rules decide with one expression over host reads and parameters, such as
//! `p99("latency_ms", p.window) > p.threshold_ms`. Running that through Rhai costs far more
//! than the read itself. So when a function's body is exactly one such expression, the loader
//! also turns it into an [`Expr`], with every parameter replaced by its value, and the engine
//! evaluates that natively. It has Rhai's meaning: integers stay integers, an integer meets a
//! float as a float, `&&` and `||` stop early. Whatever the engine cannot evaluate the same
//! way (a string in an operator, an overflow, a host error) falls back to Rhai, which then
//! answers or reports the error as it always did.
//!
//! What is compiled: number, `true`/`false` and plain string literals; `p.<name>` for a
//! number, bool or string parameter; calls whose arguments are all of those; `!`, unary `-`,
//! `* /`, `+ -`, `< <= > >=`, `== !=`, `&&`, `||`, and parentheses. Anything else, a `let` or
//! an `if` say, leaves the function to Rhai.

use crate::usage::{tokenize, Token, TokenKind};
use rhai::{Dynamic, ImmutableString, Map};

/// A value known when the rule loads.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(ImmutableString),
}

/// An operator with two operands, evaluated after both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A rule function's body, compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal or a parameter's value.
    Const(Const),
    /// A host function called with constant arguments.
    Call {
        /// Its name.
        function: String,
        /// Its arguments.
        args: Vec<Const>,
    },
    /// `!x`
    Not(Box<Expr>),
    /// `-x`
    Neg(Box<Expr>),
    /// `a <op> b`
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `a && b`: `b` only when `a` is true.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`: `b` only when `a` is false.
    Or(Box<Expr>, Box<Expr>),
}

/// Compiles `fn <function>(p)` of `source`, when its body is a single expression of the
/// compiled kind. `defined` names the functions the file defines itself: a call to one of
/// them is the script's, not the host's, and is left to Rhai.
pub fn compile(source: &str, function: &str, params: &Map, defined: &[&str]) -> Option<Expr> {
    let tokens = tokenize(source);
    let start = tokens.windows(6).position(|w| {
        w[0].text == "fn"
            && w[1].text == function
            && w[2].text == "("
            && w[3].kind == TokenKind::Ident
            && w[4].text == ")"
            && w[5].text == "{"
    })?;
    let param = tokens[start + 3].text;
    let body = &tokens[start + 6..];
    let end = closing_brace(body)?;
    let mut parser = Parser {
        tokens: &body[..end],
        at: 0,
        param,
        params,
        defined,
    };
    let expr = parser.or()?;
    (parser.at == end).then_some(expr)
}

/// The index of the `}` that closes a block whose `{` was just passed.
fn closing_brace(tokens: &[Token<'_>]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token.text {
            "{" => depth += 1,
            "}" if depth == 0 => return Some(i),
            "}" => depth -= 1,
            _ => {}
        }
    }
    None
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    at: usize,
    param: &'a str,
    params: &'t Map,
    defined: &'t [&'t str],
}

impl<'t, 'a> Parser<'t, 'a> {
    fn peek(&self, offset: usize) -> Option<&'t Token<'a>> {
        self.tokens.get(self.at + offset)
    }

    /// Whether the next tokens spell `op`, as adjacent one-character punctuation tokens; a
    /// longer operator that merely starts with `op` (`<` of `<=`, `|` of `||=`) does not count.
    fn at_op(&self, op: &str) -> bool {
        let mut column = None;
        let mut line = None;
        for (i, ch) in op.chars().enumerate() {
            let Some(token) = self.peek(i) else {
                return false;
            };
            let adjacent = column.is_none_or(|c: usize| token.column == c + 1)
                && line.is_none_or(|l| token.line == l);
            if token.kind != TokenKind::Punct || !token.text.starts_with(ch) || !adjacent {
                return false;
            }
            column = Some(token.column);
            line = Some(token.line);
        }
        // The operator must end here: `<` is not `<=`, `=` is not `==`.
        let next = self.peek(op.len());
        !next.is_some_and(|t| {
            t.kind == TokenKind::Punct
                && column.is_some_and(|c| t.column == c + 1)
                && line.is_some_and(|l| t.line == l)
                && matches!(
                    t.text,
                    "=" | "&" | "|" | "<" | ">" | "*" | "+" | "-" | "/" | "!"
                )
        })
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let found = self.at_op(op);
        if found {
            self.at += op.len();
        }
        found
    }

    fn or(&mut self) -> Option<Expr> {
        let mut left = self.and()?;
        while self.eat_op("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut left = self.equality()?;
        while self.eat_op("&&") {
            left = Expr::And(Box::new(left), Box::new(self.equality()?));
        }
        Some(left)
    }

    /// Rhai ranks `==`/`!=` below `<`/`>`.
    fn equality(&mut self) -> Option<Expr> {
        self.unchained(
            &[("==", BinaryOp::Eq), ("!=", BinaryOp::Ne)],
            Self::comparison,
        )
    }

    fn comparison(&mut self) -> Option<Expr> {
        // `<=` before `<`: `at_op` would refuse `<` there anyway, but the order says it.
        let ops = [
            ("<=", BinaryOp::Le),
            (">=", BinaryOp::Ge),
            ("<", BinaryOp::Lt),
            (">", BinaryOp::Gt),
        ];
        self.unchained(&ops, Self::additive)
    }

    fn additive(&mut self) -> Option<Expr> {
        self.left_associative(
            &[("+", BinaryOp::Add), ("-", BinaryOp::Sub)],
            Self::multiplicative,
        )
    }

    fn multiplicative(&mut self) -> Option<Expr> {
        self.left_associative(&[("*", BinaryOp::Mul), ("/", BinaryOp::Div)], Self::unary)
    }

    /// The operator of `ops` that comes next, consumed.
    fn eat_any(&mut self, ops: &[(&str, BinaryOp)]) -> Option<BinaryOp> {
        ops.iter()
            .find(|(text, _)| self.eat_op(text))
            .map(|(_, op)| *op)
    }

    /// `a op b` with at most one operator of `ops`: Rhai chains comparisons into a type error,
    /// so a second one of the same rank is left to Rhai.
    fn unchained(
        &mut self,
        ops: &[(&str, BinaryOp)],
        operand: fn(&mut Self) -> Option<Expr>,
    ) -> Option<Expr> {
        let left = operand(self)?;
        let Some(op) = self.eat_any(ops) else {
            return Some(left);
        };
        let right = operand(self)?;
        if ops.iter().any(|(text, _)| self.at_op(text)) {
            return None;
        }
        Some(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    /// `a op b op c ...` with the operators of `ops`, grouped from the left.
    fn left_associative(
        &mut self,
        ops: &[(&str, BinaryOp)],
        operand: fn(&mut Self) -> Option<Expr>,
    ) -> Option<Expr> {
        let mut left = operand(self)?;
        while let Some(op) = self.eat_any(ops) {
            left = Expr::Binary(op, Box::new(left), Box::new(operand(self)?));
        }
        Some(left)
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat_op("!") {
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Some(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Option<Expr> {
        if self.eat_op("(") {
            let inner = self.or()?;
            return self.eat_op(")").then_some(inner);
        }
        let token = self.peek(0)?;
        let text = token.text;
        let expr = match token.kind {
            TokenKind::Number => {
                self.at += 1;
                Expr::Const(number(text)?)
            }
            TokenKind::Str => {
                self.at += 1;
                Expr::Const(Const::Str(text.into()))
            }
            TokenKind::Ident if text == "true" || text == "false" => {
                self.at += 1;
                Expr::Const(Const::Bool(text == "true"))
            }
            TokenKind::Ident if text == self.param => {
                self.at += 1;
                if !self.eat_op(".") {
                    return None;
                }
                let name = self.peek(0).filter(|t| t.kind == TokenKind::Ident)?.text;
                self.at += 1;
                Expr::Const(constant(self.params.get(name)?)?)
            }
            TokenKind::Ident if self.peek(1).is_some_and(|t| t.text == "(") => {
                if self.defined.contains(&text) {
                    return None;
                }
                self.at += 2;
                let mut args = Vec::new();
                if !self.eat_op(")") {
                    loop {
                        let Expr::Const(arg) = self.unary()? else {
                            return None;
                        };
                        args.push(arg);
                        if self.eat_op(")") {
                            break;
                        }
                        if !self.eat_op(",") {
                            return None;
                        }
                    }
                }
                Expr::Call {
                    function: text.to_owned(),
                    args,
                }
            }
            _ => return None,
        };
        // A method call or an index on what was just read is left to Rhai.
        if self.at_op(".") || self.at_op("[") || self.at_op("(") {
            return None;
        }
        Some(expr)
    }
}

/// A number literal as Rhai reads it: an integer unless it has a point or an exponent.
fn number(text: &str) -> Option<Const> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    if digits.starts_with("0x") || digits.starts_with("0o") || digits.starts_with("0b") {
        return None;
    }
    if digits.contains(['.', 'e', 'E']) {
        digits.parse::<f64>().ok().map(Const::Float)
    } else {
        digits.parse::<i64>().ok().map(Const::Int)
    }
}

/// A parameter's value, when it is of a kind the compiled form holds.
fn constant(value: &Dynamic) -> Option<Const> {
    if let Ok(int) = value.as_int() {
        Some(Const::Int(int))
    } else if let Ok(float) = value.as_float() {
        Some(Const::Float(float))
    } else if let Ok(flag) = value.as_bool() {
        Some(Const::Bool(flag))
    } else {
        value.clone().into_immutable_string().ok().map(Const::Str)
    }
}

#[cfg(test)]
mod tests;
