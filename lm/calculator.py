"""The calculator tool: the model writes ``<|calc_start|>48/2<|calc_end|>`` and the hook injects the value.

    from lm.calculator import calculate, calculator_tool
    calculate("48/2")                      # "24"
    calculate("__import__('os')")          # "error: names other than pi, e and the functions ... "
    hook = calculator_tool(tokenizer)      # a ToolHook for engine.generate(..., tool_hooks=[hook])

The expression is parsed with Python's ``ast`` and evaluated by walking a whitelist of node types:
numbers, ``+ - * / // % **`` (``^`` is read as a power, as people write it), parentheses, the
constants ``pi`` and ``e`` and the functions in ``FUNCTIONS``. Nothing is ever passed to ``eval``:
a name, attribute, subscript, string, lambda or comprehension is refused before anything runs.
Limits bound the work whatever the input (``Limits``): the expression's length, the syntax tree's
depth and size, exponents and the digits of every intermediate value. These bound it in operations,
not seconds, so the answer is a function of the expression alone: a clock budget once made a garbage
collection pause (a second of CPU in a process holding millions of objects) turn a valid step into an
error, and training data built twice from one seed differed. Arithmetic is exact (``fractions.Fraction``) until a function or a fractional power makes
it a float, so ``0.1+0.2`` is ``0.3``; results are printed as integers when whole, otherwise with 12
significant digits.

Bad input never raises out of ``calculate``: the tool's reply is ``error: <why>``, which the model sees
(and a trainer can learn from).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # lm.engine imports torch; the calculator itself (and config parsing) does not need it
    from lm.engine import ToolHook

Number = Fraction | float


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is the tool's reply."""


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one expression may cause (defaults fit GSM8K-style arithmetic, whose
    longest annotation is under 100 characters)."""

    max_chars: int = 256
    max_depth: int = 32  # nesting of the syntax tree
    max_nodes: int = 128  # operations and numbers
    max_exponent: int = 10_000  # |b| in a ** b
    max_digits: int = 100  # digits of any exact intermediate value (numerator or denominator)
    max_magnitude: float = 1e100  # |value| of any float intermediate value


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise CalculatorError("sqrt of a negative number")
    if isinstance(x, Fraction):
        n, d = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if n * n == x.numerator and d * d == x.denominator:
            return Fraction(n, d)
    return math.sqrt(x)


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalculatorError("log of a non-positive number (or a base of 0 or 1)")
    return math.log(x) if base is None else math.log(x) / math.log(base)


def _round(x: Number, digits: Number = 0) -> Number:
    if not (isinstance(digits, Fraction) and digits.denominator == 1 and abs(digits) <= 50):
        raise CalculatorError("round's digits must be a whole number between -50 and 50")
    return round(x, int(digits)) if isinstance(x, float) else Fraction(round(x, int(digits)))


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name -> (function, least and most arguments)
    "sqrt": (_sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (lambda x: Fraction(math.floor(x)), 1, 1),
    "ceil": (lambda x: Fraction(math.ceil(x)), 1, 1),
    "min": (min, 1, 16),
    "max": (max, 1, 16),
    "log": (_log, 1, 2),
    "log10": (lambda x: _log(x, Fraction(10)), 1, 1),
    "exp": (lambda x: math.exp(x), 1, 1),
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(math.floor(a / b)),
    ast.Mod: lambda a, b: a % b,
}
_SPELLINGS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "^": "**"})
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")


def evaluate(expression: str, limits: Limits = Limits()) -> Number:
    """The value of ``expression``; raises ``CalculatorError`` with a reason for anything refused."""
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > limits.max_chars:
        raise CalculatorError(f"expression longer than {limits.max_chars} characters")
    text = text.replace("**", "^").translate(_SPELLINGS)
    text = _LEADING_ZEROS.sub("", text)  # "05" is 5, not a Python syntax error
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculatorError(f"cannot read {expression.strip()[:60]!r} as arithmetic") from None
    return _Evaluator(limits).run(tree.body)


def calculate(expression: str, limits: Limits = Limits()) -> str:
    """The tool's reply: the value as text, or ``error: <reason>``."""
    try:
        return format_number(evaluate(expression, limits))
    except CalculatorError as e:
        return f"error: {e}"


def format_number(value: Number) -> str:
    """Integers in full, other values with 12 significant digits (``1/3`` is ``0.333333333333``)."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return str(value.numerator)
    x = float(value)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = format(x, ".12g")
    return "0" if text == "-0" else text


def calculator_tool(tokenizer, limits: Limits = Limits()) -> ToolHook:
    """A ``ToolHook`` for ``<|calc_start|> ... <|calc_end|>`` whose reply is ``calculate``'s, wrapped in
    ``<|result_start|> ... <|result_end|>``."""
    from lm.engine import text_tool

    return text_tool(tokenizer, "<|calc_start|>", "<|calc_end|>", lambda expr: calculate(expr, limits))


class _Evaluator:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.nodes = 0

    def run(self, node: ast.AST) -> Number:
        return self._eval(node, 1)

    def _eval(self, node: ast.AST, depth: int) -> Number:
        lim = self.limits
        self.nodes += 1
        if self.nodes > lim.max_nodes:
            raise CalculatorError(f"more than {lim.max_nodes} operations")
        if depth > lim.max_depth:
            raise CalculatorError(f"nested deeper than {lim.max_depth} levels")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise CalculatorError(f"{node.value!r} is not a number")
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise CalculatorError("number too large")
            return self._check(
                Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
            )
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            value = self._eval(node.operand, depth + 1)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            a = self._eval(node.left, depth + 1)
            b = self._eval(node.right, depth + 1)
            if isinstance(node.op, ast.Pow):
                return self._check(self._power(a, b))
            op = _BINARY.get(type(node.op))
            if op is None:
                raise CalculatorError(
                    f"operator {type(node.op).__name__} is not allowed (use + - * / // % ^)"
                )
            if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and b == 0:
                raise CalculatorError("division by zero")
            try:
                value = op(a, b)
            except (OverflowError, ValueError):  # a float quotient past inf floored (1e99 // 1e-300)
                raise CalculatorError("result too large") from None
            return self._check(value)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise CalculatorError(self._names_allowed(node.id))
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS or node.keywords:
                raise CalculatorError(self._names_allowed(name or ast.unparse(node.func)[:30]))
            fn, least, most = FUNCTIONS[name]
            if not least <= len(node.args) <= most:
                raise CalculatorError(f"{name} takes {least}-{most} arguments, got {len(node.args)}")
            args = [self._eval(a, depth + 1) for a in node.args]
            try:
                return self._check(fn(*args))
            except CalculatorError:
                raise
            except OverflowError:
                raise CalculatorError(f"{name}: result too large") from None
            except (ValueError, ZeroDivisionError) as e:
                raise CalculatorError(f"{name}: undefined for these arguments ({e})") from None
        raise CalculatorError(f"{type(node).__name__} is not allowed in an expression")

    def _power(self, a: Number, b: Number) -> Number:
        lim = self.limits
        if isinstance(b, Fraction) and b.denominator == 1 and isinstance(a, Fraction):
            if abs(b) > lim.max_exponent:
                raise CalculatorError(f"exponent larger than {lim.max_exponent}")
            if a == 0 and b < 0:
                raise CalculatorError("division by zero")
            size = max(abs(a.numerator), a.denominator)
            if size > 1 and abs(b) * math.log10(size) > lim.max_digits:
                raise CalculatorError(f"result would have more than {lim.max_digits} digits")
            return a**b
        if abs(b) > lim.max_exponent:
            raise CalculatorError(f"exponent larger than {lim.max_exponent}")
        if a < 0 and not float(b).is_integer():
            raise CalculatorError("a negative number to a fractional power")
        try:
            return math.pow(a, b)
        except (OverflowError, ValueError, ZeroDivisionError):
            raise CalculatorError("result too large or undefined") from None

    def _check(self, value: Number) -> Number:
        lim = self.limits
        if isinstance(value, Fraction):
            if value.numerator.bit_length() * 0.30103 > lim.max_digits:
                raise CalculatorError(f"result larger than {lim.max_digits} digits")
            if value.denominator.bit_length() * 0.30103 > lim.max_digits:
                return float(value)  # a very small or very precise value: a float is close enough
            return value
        if not math.isfinite(value) or abs(value) > lim.max_magnitude:
            raise CalculatorError("result too large")
        return value

    @staticmethod
    def _names_allowed(name: str) -> str:
        return f"{name!r} is not allowed; names are the constants pi and e and the functions " + ", ".join(
            FUNCTIONS
        )
