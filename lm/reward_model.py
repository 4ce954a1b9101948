"""A reward model: the decoder's body with a scalar head, and the Bradley-Terry loss on preference pairs.

Why this shape: parameter names and math are Hugging Face ``LlamaForSequenceClassification``'s with
``num_labels=1`` (the body under ``model.``, the head as ``score.weight``), so the reward stage's
export loads in ``transformers`` (tests/test_train.py compares the scores), and the reward model
starts from a pretrained or SFT decoder by taking its body as it is.

The model scores every position; a sequence's reward is the score at its last token (where a causal
model has read all of it). A batch may be right-padded rows or packed rows with document ids.

What a reward model reads (``reward_input_ids``): a conversation rendered by the chat format
(lm/chat.py), exactly as the policy sees and writes it, ending at the ``<|im_end|>`` that closes the
reply being judged. Training pairs (pipelines/rm) and the scorer that serves rewards to RL
(lm/reward_scorer.py) both render through it, so the model is scored on what it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm.chat import ChatFormat, ConversationTooLong
from lm.chat_messages import Conversation, Message, normalize_conversation
from lm.model import LlamaBody, ModelConfig, Transformer, run_body
from lm.train.losses import Loss


class RewardModel(nn.Module):
    """``LlamaForSequenceClassification`` (one label): ``forward`` gives a score per position ``[B, T]``."""

    hf_architecture = "LlamaForSequenceClassification"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        self.score = nn.Linear(config.hidden_size, 1, bias=False)

    @classmethod
    def from_base(cls, base: Transformer, seed: int = 0) -> RewardModel:
        """The base decoder's body (copied) with a fresh head, Normal(0, init_std) seeded by ``seed``."""
        rm = cls(base.config).to(next(base.parameters()).device)
        rm.model.load_state_dict(base.model.state_dict())
        generator = torch.Generator(device=rm.score.weight.device).manual_seed(seed)
        with torch.no_grad():
            rm.score.weight.normal_(0.0, base.config.init_std, generator=generator)
        return rm

    def forward(self, input_ids: Tensor, document_ids: Tensor | None = None) -> Tensor:
        """Scores ``[B, T]``: causal over each row, or over each sequence of packed rows."""
        return self.score(run_body(self.model, input_ids, None, None, document_ids)).squeeze(-1)

    def num_params(self) -> int:
        """Parameters held: the body and the head (no output projection)."""
        return sum(p.numel() for p in self.parameters())


def sequence_rewards(scores: Tensor, last: Tensor) -> Tensor:
    """Each sequence's reward: ``scores`` ``[B, T]`` at (row, last token index) pairs ``last`` ``[N, 2]``."""
    return scores[last[:, 0], last[:, 1]].float()


def bradley_terry_loss(model: nn.Module, batch: dict[str, Tensor]) -> Loss:
    """-log sigmoid(r_chosen - r_rejected) summed over the batch's pairs; the count is pairs.

    ``batch``: ``input_ids`` (and optionally ``document_ids``) holding every sequence, and
    ``chosen_last`` / ``rejected_last`` ``[pairs, 2]``: (row, index of the last token) of each pair's
    two sequences. ``sums["accuracy"]`` counts pairs ranked the right way round.
    """
    scores = model(batch["input_ids"], document_ids=batch.get("document_ids"))
    chosen = sequence_rewards(scores, batch["chosen_last"])
    rejected = sequence_rewards(scores, batch["rejected_last"])
    margin = chosen - rejected
    return Loss(
        total=-F.logsigmoid(margin).sum(),
        count=margin.numel(),
        tokens=batch["input_ids"].numel(),
        sums={"accuracy": (margin > 0).sum(), "margin": margin.detach().sum()},
    )


def _reply_ids(chat: ChatFormat, prompt: Conversation, head: list[int], reply: list[Message]) -> list[int]:
    """The reply's ids after ``head`` (the prompt up to ``<|im_start|>assistant\\n``) up to its last
    ``<|im_end|>``, rendered with the prompt so the reply is tokenized as it is generated."""
    if reply[-1]["role"] != "assistant":
        raise ValueError("a reply to score must end with an assistant message")
    full = chat.render_conversation({**prompt, "messages": [*prompt["messages"], *reply]}).ids
    if full[: len(head)] != head:  # cannot happen with a prompt that ends in a user or tool turn
        raise ValueError("the prompt does not render as the start of the conversation")
    end = len(full) - 1 - full[::-1].index(chat.im_end_id)  # the reply's closing <|im_end|>
    return full[len(head) : end + 1]


def reward_input_ids(
    chat: ChatFormat,
    prompt: Conversation | list[Message],
    replies: list[list[Message]],
    max_tokens: int | None = None,
) -> list[list[int]]:
    """The ids a reward model scores for each of ``replies`` to one ``prompt``: ``<|endoftext|>``, the
    prompt, the reply, ending at the reply's last ``<|im_end|>``.

    ``prompt`` is a conversation (messages, optionally with ``tools``) that ends with a user or tool
    turn; each reply is the assistant's message(s) that follow it. Past ``max_tokens``, the prompt's
    oldest exchanges are dropped whole (the chat format's rule), the same for every reply, so the
    replies are compared on one prompt; ``ConversationTooLong`` when even that does not fit (a reply
    is never cut: its last token is what is scored). Bad messages raise ``ChatFormatError``.
    """
    conv = normalize_conversation(prompt)
    head = chat.render_prompt(conv).ids
    tails = [_reply_ids(chat, conv, head, normalize_conversation(r)["messages"]) for r in replies]
    longest = max(len(t) for t in tails)
    if max_tokens is not None and len(head) + longest > max_tokens:
        budget = max_tokens - longest
        if budget < 2:
            raise ConversationTooLong(
                f"a reply of {longest} tokens leaves no room for its prompt in max_tokens={max_tokens}"
            )
        head = chat.render_prompt(conv, max_tokens=budget).ids
    return [head + t for t in tails]
