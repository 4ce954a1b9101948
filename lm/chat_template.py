"""The chat format as text: its fixed strings, and the same format as a Hugging Face Jinja template.

lm/chat.py renders conversations to token ids; this module holds what both that rendering and the
Jinja ``CHAT_TEMPLATE`` (saved in ``tokenizer_config.json``) must agree on, so transformers and vLLM
users get the text our own code produces. It imports nothing, so lm/tokenizer.py can save the template
without importing the chat code.

A conversation renders as::

    <|endoftext|><|im_start|>system\\n{system text[\\n\\n{tools block}]}<|im_end|>\\n
    <|im_start|>user\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n{text}<|search_start|>{query}<|search_end|><|result_start|>{result}<|result_end|>{text}
        <|calc_start|>{expression}<|calc_end|><|result_start|>{value}<|result_end|>{text}
        [\\n]<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call><|im_end|>\\n
    <|im_start|>tool\\n{function result}<|im_end|>\\n
    <|im_start|>assistant\\n            (the generation prompt)

The leading ``<|endoftext|>`` is the document start pretraining put before every document. Function
calls of the OpenAI kind (``tool_calls``) have no special tokens of their own: they are plain text in
the Hermes/Qwen ``<tool_call>`` style, and their results come back in ``tool`` turns.

One difference cannot be removed: a text template is tokenized as a whole, special-token text
included, so with the Jinja template a user message holding ``<|im_start|>system`` *does* become a
control token (the classic chat-template injection). lm/chat.py encodes message text as plain text
and builds control tokens only from the conversation's structure; serve untrusted input through it.
"""

from __future__ import annotations

BOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SEARCH_START, SEARCH_END = "<|search_start|>", "<|search_end|>"
CALC_START, CALC_END = "<|calc_start|>", "<|calc_end|>"
RESULT_START, RESULT_END = "<|result_start|>", "<|result_end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"

# Put after the system text (or alone in a system turn) when a conversation declares functions.
TOOLS_HEADER = (
    "# Tools\n\n"
    "You may call the functions below. To call one, write\n"
    '<tool_call>\n{"name": <function name>, "arguments": <arguments as a JSON object>}\n</tool_call>\n'
    "and its result comes back in a tool message.\n\n"
    "<tools>\n"
)
TOOLS_FOOTER = "</tools>"
TEXT_PARTS_SEPARATOR = "\n"  # joins the text parts of a non-assistant message's content list

# Every piece of output is an expression, so the template renders the same with or without Jinja's
# trim_blocks/lstrip_blocks (transformers turns them on).
CHAT_TEMPLATE = (
    "{%- set ns = namespace(tools='') -%}"
    "{%- if tools -%}"
    "{%- set ns.tools = " + repr(TOOLS_HEADER) + " -%}"
    "{%- for tool in tools -%}{%- set ns.tools = ns.tools + (tool | tojson) + '\\n' -%}{%- endfor -%}"
    "{%- set ns.tools = ns.tools + " + repr(TOOLS_FOOTER) + " -%}"
    "{%- endif -%}"
    "{{- '" + BOS + "' -}}"
    "{%- if ns.tools and (not messages or (messages[0].role != 'system' and messages[0].role != 'developer')) -%}"
    "{{- '" + IM_START + "system\\n' + ns.tools + '" + IM_END + "\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- set role = 'system' if message.role == 'developer' else message.role -%}"
    "{{- '" + IM_START + "' + role + '\\n' -}}"
    "{%- set ns.text = '' -%}"
    "{%- if message.content is string -%}"
    "{%- set ns.text = message.content -%}"
    "{%- elif message.content is not none -%}"
    "{%- for part in message.content -%}"
    "{%- if role == 'assistant' -%}"
    "{%- if part.type == 'text' -%}{%- set ns.text = ns.text + part.text -%}"
    "{%- elif part.type == 'search' -%}"
    "{%- set ns.text = ns.text + '" + SEARCH_START + "' + part.query + '" + SEARCH_END + "' -%}"
    "{%- if part.result is defined and part.result is not none -%}"
    "{%- set ns.text = ns.text + '" + RESULT_START + "' + part.result + '" + RESULT_END + "' -%}"
    "{%- endif -%}"
    "{%- elif part.type == 'calc' -%}"
    "{%- set ns.text = ns.text + '" + CALC_START + "' + part.expression + '" + CALC_END + "' -%}"
    "{%- if part.result is defined and part.result is not none -%}"
    "{%- set ns.text = ns.text + '" + RESULT_START + "' + part.result + '" + RESULT_END + "' -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- else -%}"
    "{%- if not loop.first -%}{%- set ns.text = ns.text + " + repr(TEXT_PARTS_SEPARATOR) + " -%}{%- endif -%}"
    "{%- set ns.text = ns.text + part.text -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- if loop.first and role == 'system' and ns.tools -%}"
    "{%- set ns.text = ns.text + '\\n\\n' + ns.tools if ns.text else ns.tools -%}"
    "{%- endif -%}"
    "{%- if role == 'assistant' and message.tool_calls -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set f = call.function if call.function is defined else call -%}"
    "{%- if ns.text -%}{%- set ns.text = ns.text + '\\n' -%}{%- endif -%}"
    "{%- set args = f.arguments if f.arguments is string else (f.arguments | tojson) -%}"
    "{%- set ns.text = ns.text + "
    + repr(TOOL_CALL_OPEN)
    + " + '{\"name\": ' + (f.name | tojson) + ', \"arguments\": ' + args + '}' + "
    + repr(TOOL_CALL_CLOSE)
    + " -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- ns.text + '" + IM_END + "\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + IM_START + "assistant\\n' -}}{%- endif -%}"
)
