"""``raychat tokens``: how a tokenizer splits a text, token by token, with the ids.

    raychat tokens "hello deep seek" --tokenizer gpt2:../shared/data/tokenizers/gpt2
    raychat tokens "Rivmouth is a town" --model runs/tiny/models/base
    echo "text from a pipe" | raychat tokens - --tokenizer runs/tiny/tokenizer --json

On a terminal each token gets its own background colour; otherwise (or with ``--no-color``) tokens are
separated by ``|`` (a ``|`` inside a token is ``\\|``). Whitespace and control characters are shown
visibly (``\\n``, ``\\t``; a backslash is ``\\\\``), and a token
that is only part of a multi-byte character shows its bytes (``<e2 80>``). Special-token text such as
``<|im_start|>`` is encoded as plain text, as for any untrusted text, unless ``--allow-special``.
``--json`` prints ``{"tokenizer", "count", "ids", "tokens": [{"id", "text", "bytes", "special"}]}``
(``text`` is null for a token that is not whole UTF-8; ``bytes`` is hex).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

# background colours that keep default-coloured text readable, on dark and light terminals
COLORS = ("\x1b[48;5;153m", "\x1b[48;5;222m", "\x1b[48;5;157m", "\x1b[48;5;218m", "\x1b[48;5;187m")
SPECIAL_COLOR = "\x1b[1;48;5;141m"
RESET = "\x1b[0m"
FG = "\x1b[38;5;16m"  # black text on the light backgrounds
VISIBLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def add_tokens_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="-", help="the text; '-' or nothing reads standard input")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--tokenizer", help="a tokenizer spec: a tokenizer directory, gpt2:<dir>, tiktoken:<file>"
    )
    which.add_argument("--model", help="a model directory (its saved tokenizer is used)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the marked text")
    parser.add_argument("--no-color", action="store_true", help="mark boundaries with | even on a terminal")
    parser.add_argument(
        "--allow-special", action="store_true", help="read special-token text such as <|im_end|> as the token"
    )


def main_tokens(args: argparse.Namespace) -> int:
    from lm.tokenizer import TokenizerError, load_tokenizer

    spec = args.tokenizer or args.model
    if not spec:
        print("raychat tokens: give --tokenizer SPEC or --model DIR", file=sys.stderr)
        return 2
    try:
        tokenizer = load_tokenizer(spec)
    except (TokenizerError, OSError) as e:
        print(f"raychat tokens: {e}", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args.text == "-" else args.text
    ids = tokenizer.encode(text, allow_special=args.allow_special)
    tokens = [_token(tokenizer, i) for i in ids]
    if args.json:
        shown = [{k: t[k] for k in ("id", "text", "bytes", "special")} for t in tokens]
        record = {"tokenizer": tokenizer.name, "count": len(ids), "ids": ids, "tokens": shown}
        print(json.dumps(record, ensure_ascii=False))
        return 0
    color = not args.no_color and sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
    print(render(tokens, color))
    print(f"ids: {ids}")
    print(
        f"{len(ids)} tokens, {len(text)} characters ({tokenizer.name}, vocabulary {tokenizer.vocab_size:,})"
    )
    return 0


def _token(tokenizer: Any, token_id: int) -> dict[str, Any]:
    raw = tokenizer.token_bytes(token_id)
    special = token_id in set(tokenizer.special_tokens.values())
    try:
        text = raw.decode("utf-8")
        shown = (
            text
            if special
            else "".join(
                VISIBLE.get(c, c if c.isprintable() or c == " " else f"\\x{ord(c):02x}") for c in text
            )
        )
    except UnicodeDecodeError:  # part of a multi-byte character
        text, shown = None, "<" + " ".join(f"{b:02x}" for b in raw) + ">"
    return {"id": token_id, "text": text, "bytes": raw.hex(), "shown": shown, "special": special}


def render(tokens: list[dict[str, Any]], color: bool) -> str:
    """The tokens one after another: coloured backgrounds, or ``|`` between them."""
    if not color:
        return "|".join(t["shown"] if t["special"] else t["shown"].replace("|", "\\|") for t in tokens)
    out = []
    for n, t in enumerate(tokens):
        background = SPECIAL_COLOR if t["special"] else COLORS[n % len(COLORS)]
        out.append(f"{background}{FG}{t['shown']}{RESET}")
    return "".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tokens_cmd", description=__doc__.split("\n\n")[0]
    )
    add_tokens_args(parser)
    sys.exit(main_tokens(parser.parse_args()))
