//! Rule functions evaluated without Rhai: the loader's compiled form
//! ([`salve_rules::native`]) with each host call resolved to a [`Read`] once, at install.
//!
//! Evaluation follows Rhai's rules for the operators it has. Where Rhai would raise an error
//! (an overflow, a division by zero, a non-boolean operand of `&&`) or where the types are
//! ones this evaluator leaves alone (strings, booleans compared for order), it gives up and
//! the engine runs the function through Rhai instead, which answers or reports as ever.

use crate::host::{read_of, Frame, Read};
use salve_rules::native::{BinaryOp, Const, Expr};
use salve_rules::Dynamic;

/// A value while evaluating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A compiled rule function, ready to evaluate against a frame.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Value(Value),
    Read(Read),
    Not(Box<Plan>),
    Neg(Box<Plan>),
    Binary(BinaryOp, Box<Plan>, Box<Plan>),
    And(Box<Plan>, Box<Plan>),
    Or(Box<Plan>, Box<Plan>),
}

impl Plan {
    /// Resolves `expr`'s host calls into reads, with windows checked as a call would check
    /// them; `None` when a call or a constant is not one a plan can hold.
    pub(crate) fn new(expr: &Expr, frame: &mut Frame) -> Option<Self> {
        let boxed = |expr: &Expr, frame: &mut Frame| Self::new(expr, frame).map(Box::new);
        Some(match expr {
            Expr::Const(Const::Int(int)) => Plan::Value(Value::Int(*int)),
            Expr::Const(Const::Float(float)) => Plan::Value(Value::Float(*float)),
            Expr::Const(Const::Bool(flag)) => Plan::Value(Value::Bool(*flag)),
            Expr::Const(Const::Str(_)) => return None,
            Expr::Call { function, args } => Plan::Read(read_of(frame, function, args)?),
            Expr::Not(inner) => Plan::Not(boxed(inner, frame)?),
            Expr::Neg(inner) => Plan::Neg(boxed(inner, frame)?),
            Expr::Binary(op, a, b) => Plan::Binary(*op, boxed(a, frame)?, boxed(b, frame)?),
            Expr::And(a, b) => Plan::And(boxed(a, frame)?, boxed(b, frame)?),
            Expr::Or(a, b) => Plan::Or(boxed(a, frame)?, boxed(b, frame)?),
        })
    }

    /// The verdict against the state in the frame, noting each read as a call would; `None`
    /// when only Rhai can say (see the module's doc).
    pub(crate) fn verdict(&self, frame: &mut Frame) -> Option<bool> {
        match self.eval(frame)? {
            Value::Bool(verdict) => Some(verdict),
            Value::Int(_) | Value::Float(_) => None,
        }
    }

    fn eval(&self, frame: &mut Frame) -> Option<Value> {
        match self {
            Plan::Value(value) => Some(*value),
            Plan::Read(read) => number(&frame.read(read)?.0),
            Plan::Not(inner) => match inner.eval(frame)? {
                Value::Bool(flag) => Some(Value::Bool(!flag)),
                _ => None,
            },
            Plan::Neg(inner) => match inner.eval(frame)? {
                Value::Int(int) => int.checked_neg().map(Value::Int),
                Value::Float(float) => Some(Value::Float(-float)),
                Value::Bool(_) => None,
            },
            Plan::And(a, b) => match a.eval(frame)? {
                Value::Bool(false) => Some(Value::Bool(false)),
                Value::Bool(true) => boolean(b.eval(frame)?),
                _ => None,
            },
            Plan::Or(a, b) => match a.eval(frame)? {
                Value::Bool(true) => Some(Value::Bool(true)),
                Value::Bool(false) => boolean(b.eval(frame)?),
                _ => None,
            },
            Plan::Binary(op, a, b) => {
                let a = a.eval(frame)?;
                let b = b.eval(frame)?;
                binary(*op, a, b)
            }
        }
    }
}

/// What a host function returned, as a value here.
fn number(returned: &Dynamic) -> Option<Value> {
    if let Ok(int) = returned.as_int() {
        Some(Value::Int(int))
    } else {
        returned.as_float().ok().map(Value::Float)
    }
}

fn boolean(value: Value) -> Option<Value> {
    matches!(value, Value::Bool(_)).then_some(value)
}

fn binary(op: BinaryOp, a: Value, b: Value) -> Option<Value> {
    use BinaryOp::*;
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => match op {
            Add => x.checked_add(y).map(Value::Int),
            Sub => x.checked_sub(y).map(Value::Int),
            Mul => x.checked_mul(y).map(Value::Int),
            // Rhai refuses a division by zero, and an overflow.
            Div => x.checked_div(y).map(Value::Int),
            Eq | Ne | Lt | Le | Gt | Ge => compare(op, &x, &y),
        },
        (Value::Bool(x), Value::Bool(y)) => match op {
            Eq => Some(Value::Bool(x == y)),
            Ne => Some(Value::Bool(x != y)),
            _ => None,
        },
        (Value::Bool(_), _) | (_, Value::Bool(_)) => None,
        // An integer meets a float as a float, as in Rhai.
        (x, y) => {
            let (x, y) = (float(x), float(y));
            match op {
                Add => Some(Value::Float(x + y)),
                Sub => Some(Value::Float(x - y)),
                Mul => Some(Value::Float(x * y)),
                // Left to Rhai, whatever it makes of it.
                Div if y == 0.0 => None,
                Div => Some(Value::Float(x / y)),
                // Rhai's comparisons with a NaN do not follow IEEE 754 throughout (`0.0 <= NaN`
                // is true there): a NaN, which means no data, is left to Rhai.
                Eq | Ne | Lt | Le | Gt | Ge if x.is_nan() || y.is_nan() => None,
                Eq | Ne | Lt | Le | Gt | Ge => compare(op, &x, &y),
            }
        }
    }
}

/// A comparison of two numbers of one type; `None` for an arithmetic operator.
fn compare<T: PartialOrd>(op: BinaryOp, x: &T, y: &T) -> Option<Value> {
    use BinaryOp::*;
    let holds = match op {
        Eq => x == y,
        Ne => x != y,
        Lt => x < y,
        Le => x <= y,
        Gt => x > y,
        Ge => x >= y,
        Add | Sub | Mul | Div => return None,
    };
    Some(Value::Bool(holds))
}

fn float(value: Value) -> f64 {
    match value {
        Value::Int(int) => int as f64,
        Value::Float(float) => float,
        Value::Bool(flag) => f64::from(u8::from(flag)),
    }
}

#[cfg(test)]
mod tests;
