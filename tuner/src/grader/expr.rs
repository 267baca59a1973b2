//! The arithmetic of `multi`'s `calculate_output`, parsed by recursive
//! descent instead of evaluated by any general-purpose interpreter, so a
//! config can only ever compute a number from sub-grader scores.
//!
//! Grammar (usual precedence, left-associative):
//! ```text
//! expr    := term (("+" | "-") term)*
//! term    := unary (("*" | "/") unary)*
//! unary   := ("-" | "+") unary | primary
//! primary := number | name | func "(" expr ("," expr)* ")" | "(" expr ")"
//! func    := min | max | abs | floor | ceil | sqrt | exp | log | clamp
//! ```

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Func {
    Min,
    Max,
    Abs,
    Floor,
    Ceil,
    Sqrt,
    Exp,
    Log,
    Clamp,
}

impl Func {
    fn lookup(name: &str) -> Option<Func> {
        Some(match name {
            "min" => Func::Min,
            "max" => Func::Max,
            "abs" => Func::Abs,
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            "sqrt" => Func::Sqrt,
            "exp" => Func::Exp,
            "log" => Func::Log,
            "clamp" => Func::Clamp,
            _ => return None,
        })
    }

    fn arity_ok(self, n: usize) -> bool {
        match self {
            Func::Min | Func::Max => n >= 1,
            Func::Clamp => n == 3,
            _ => n == 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Num(f64),
    Var(String),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Sym(char),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // Exponents (1e-3) are allowed; the sign after `e` belongs to the number.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            toks.push(Tok::Num(
                text.parse().map_err(|_| format!("bad number `{text}`"))?,
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Name(chars[start..i].iter().collect()));
        } else if "+-*/(),".contains(c) {
            toks.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    names: &'a [&'a str],
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat('+') {
                '+'
            } else if self.eat('-') {
                '-'
            } else {
                return Ok(lhs);
            };
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat('*') {
                '*'
            } else if self.eat('/') {
                '/'
            } else {
                return Ok(lhs);
            };
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat('-') {
            Ok(Expr::Neg(Box::new(self.unary()?)))
        } else if self.eat('+') {
            self.unary()
        } else {
            self.primary()
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Name(name)) => {
                self.pos += 1;
                if self.eat('(') {
                    let func = Func::lookup(&name).ok_or_else(|| format!("unknown function `{name}` (supported: min, max, abs, floor, ceil, sqrt, exp, log, clamp)"))?;
                    let mut args = vec![self.expr()?];
                    while self.eat(',') {
                        args.push(self.expr()?);
                    }
                    if !self.eat(')') {
                        return Err(format!("expected `)` after the arguments of `{name}`"));
                    }
                    if !func.arity_ok(args.len()) {
                        return Err(format!(
                            "wrong number of arguments ({}) to `{name}`",
                            args.len()
                        ));
                    }
                    Ok(Expr::Call(func, args))
                } else if self.names.contains(&name.as_str()) {
                    Ok(Expr::Var(name))
                } else {
                    Err(format!(
                        "unknown name `{name}` (sub-graders: {})",
                        self.names.join(", ")
                    ))
                }
            }
            Some(Tok::Sym('(')) => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(')') {
                    return Err("expected `)`".into());
                }
                Ok(e)
            }
            Some(Tok::Sym(c)) => Err(format!("unexpected `{c}`")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

impl Expr {
    /// Parses `src`, accepting only the given variable names.
    pub fn parse(src: &str, names: &[&str]) -> Result<Expr, String> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
            names,
        };
        let e = p.expr()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected trailing {t:?}")),
        }
    }

    /// Evaluates; any non-finite intermediate (division by zero, sqrt or
    /// log of a negative) is an error rather than a NaN reward.
    pub fn eval(&self, vars: &HashMap<String, f64>) -> Result<f64, String> {
        let v = match self {
            Expr::Num(n) => *n,
            Expr::Var(name) => *vars
                .get(name)
                .ok_or_else(|| format!("no score for `{name}`"))?,
            Expr::Neg(e) => -e.eval(vars)?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(vars)?, b.eval(vars)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ if b == 0.0 => return Err("division by zero".into()),
                    _ => a / b,
                }
            }
            Expr::Call(f, args) => {
                let xs = args
                    .iter()
                    .map(|a| a.eval(vars))
                    .collect::<Result<Vec<f64>, String>>()?;
                match f {
                    Func::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                    Func::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Func::Abs => xs[0].abs(),
                    Func::Floor => xs[0].floor(),
                    Func::Ceil => xs[0].ceil(),
                    Func::Sqrt => xs[0].sqrt(),
                    Func::Exp => xs[0].exp(),
                    Func::Log => xs[0].ln(),
                    Func::Clamp if xs[1] > xs[2] => {
                        return Err(format!("clamp bounds reversed ({} > {})", xs[1], xs[2]))
                    }
                    Func::Clamp => xs[0].clamp(xs[1], xs[2]),
                }
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("expression produced a non-finite value ({v})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<f64, String> {
        let vars: HashMap<String, f64> = [("a".to_owned(), 1.0), ("b".to_owned(), 0.5)].into();
        Expr::parse(src, &["a", "b"])?.eval(&vars)
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(eval("1 + 2 * 3").unwrap(), 7.0);
        assert_eq!(eval("(1 + 2) * 3").unwrap(), 9.0);
        assert_eq!(eval("8 - 4 - 2").unwrap(), 2.0);
        assert_eq!(eval("8 / 4 / 2").unwrap(), 1.0);
        assert_eq!(eval("-a + 3").unwrap(), 2.0);
        assert_eq!(eval("- -a").unwrap(), 1.0);
        assert_eq!(eval("2 * -b").unwrap(), -1.0);
        assert_eq!(eval("0.5 * a + 0.5 * b").unwrap(), 0.75);
        assert_eq!(eval("1e-1 * 10").unwrap(), 1.0);
    }

    #[test]
    fn functions() {
        assert_eq!(eval("min(a, b, 0.7)").unwrap(), 0.5);
        assert_eq!(eval("max(a, b)").unwrap(), 1.0);
        assert_eq!(eval("abs(-2) + floor(1.7) + ceil(1.2)").unwrap(), 5.0);
        assert_eq!(eval("sqrt(4) * exp(0) + log(1)").unwrap(), 2.0);
        assert_eq!(eval("clamp(a + b, 0, 1)").unwrap(), 1.0);
    }

    #[test]
    fn parse_errors() {
        assert!(eval("a + c").unwrap_err().contains("unknown name `c`"));
        assert!(eval("pow(a, 2)").unwrap_err().contains("unknown function"));
        assert!(eval("clamp(a, 0)").is_err());
        assert!(eval("abs()").is_err());
        assert!(eval("a +").is_err());
        assert!(eval("(a").is_err());
        assert!(eval("a b").is_err());
        assert!(eval("a ** 2").is_err());
        assert!(eval("a; b").is_err());
    }

    #[test]
    fn runtime_errors() {
        assert!(eval("a / (b - 0.5)")
            .unwrap_err()
            .contains("division by zero"));
        assert!(eval("sqrt(-1)").is_err());
        assert!(eval("log(0)").is_err());
        assert!(eval("clamp(a, 1, 0)").is_err());
    }
}
