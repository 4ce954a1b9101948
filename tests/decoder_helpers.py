"""The byte-level tokenizer, chat format and reply-decoder driving that the serving unit tests share;
not a test module."""

from __future__ import annotations

import json

from engine_helpers import byte_tokenizer

from lm.chat import ChatFormat
from serving.decode import ReplyDecoder
from serving.openai_api import ChatCompletionRequest, parse_request

TOK = byte_tokenizer()
CHAT = ChatFormat(TOK)


def sp(name: str) -> int:
    return TOK.token_id(name)


def decode(decoder: ReplyDecoder, ids: list[int], stop_last: bool = False):
    """Feed ids one at a time; the concatenated text handed out, and the tool events."""
    text, started, done = "", [], []
    for i, t in enumerate(ids):
        piece = decoder.feed(t, -0.5, is_stop=stop_last and i == len(ids) - 1)
        text += piece.text
        started += [u.start_delta() for u in piece.tools_started]
        done += [(u.index, u.result) for u in piece.tools_done]
        if decoder.stopped:
            break
    text += decoder.finish().text
    return text, started, done


def parse(body: dict, kind=ChatCompletionRequest):
    """A request body as the handlers get it (validated, or an OpenAIError)."""
    return parse_request(json.dumps(body).encode(), kind)
