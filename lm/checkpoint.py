"""Model directories in the Hugging Face layout: what every stage writes and reads (DESIGN.md).

    save_pretrained(model, "runs/tiny/models/base", tokenizer=tok, meta={"stage": "pretrain", "step": 200})
    model, meta = load_pretrained("runs/tiny/models/base")

A directory holds ``config.json`` (``LlamaForCausalLM``, HF field names), ``model.safetensors`` (tied
weights stored once, as HF does), ``generation_config.json``, the tokenizer's files and ``raychat.json``
(our metadata: stage, step, tokens seen, source run, creation time). Because names and math are
Llama's, ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` and ``vllm.LLM(model=dir)`` load it
unchanged. ``load_pretrained`` also imports Llama-shaped checkpoints made elsewhere (Llama; Mistral
without a sliding window shorter than its context), single-file or sharded; anything our decoder
cannot represent is refused with the reason (real Qwen2 checkpoints have q/k/v biases and Qwen3's
q/k norms, so both are refused).

A reward model (lm/reward_model.py) is saved the same way with ``LlamaForSequenceClassification``,
``num_labels`` 1 and the tokenizer's ``<|pad|>`` as ``pad_token_id`` in ``config.json`` (so
``transformers.AutoModelForSequenceClassification.from_pretrained(dir)`` gives its scores), and read
back with ``load_reward_model``; each loader refuses the other kind of directory by name.

Local paths only; a stage that writes to object storage saves locally and uploads the directory.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from lm import atomic
from lm.files import read_json_object
from lm.model import ModelConfig, RotaryEmbedding, Transformer
from lm.reward_model import RewardModel

FORMAT = "raychat-model-v1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_FILE = "generation_config.json"
META_FILE = "raychat.json"

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_DTYPES_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()} | {"float": torch.float32, "half": torch.float16}
# model types whose configs are Llama's with extra fields we check below
_IMPORTABLE_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
CAUSAL_LM = "LlamaForCausalLM"
SEQUENCE_CLASSIFIER = RewardModel.hf_architecture  # "LlamaForSequenceClassification"


class CheckpointError(ValueError):
    """A model directory that cannot be written or read, described for a person."""


def hf_config_dict(
    config: ModelConfig, dtype: torch.dtype, bos_token_id: int | None, eos_token_ids: list[int]
) -> dict[str, Any]:
    """``config.json`` of a ``LlamaForCausalLM`` with our sizes.

    RoPE's base is written both as ``rope_theta`` (transformers 4.x, vLLM) and ``rope_parameters``
    (transformers 5), so readers of either generation agree.
    """
    eos: int | list[int] | None = eos_token_ids[0] if len(eos_token_ids) == 1 else (eos_token_ids or None)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch.")),
    }


def config_from_hf(hf: dict[str, Any], where: str = CONFIG_FILE) -> ModelConfig:
    """Our ``ModelConfig`` from a Llama-like ``config.json``; a clear error for what we cannot represent."""
    model_type = hf.get("model_type")
    if model_type not in _IMPORTABLE_TYPES:
        raise CheckpointError(
            f"{where}: model_type {model_type!r} is not Llama-shaped; importable: {', '.join(sorted(_IMPORTABLE_TYPES))}"
        )
    problems = []
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):  # transformers' swish is silu
        problems.append(f"hidden_act {hf.get('hidden_act')!r} (ours is SwiGLU with silu)")
    if hf.get("attention_bias", model_type == "qwen2"):  # Qwen2 always has q/k/v biases
        problems.append("attention projections with biases")
    if hf.get("mlp_bias"):
        problems.append("MLP biases")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        problems.append(f"RoPE scaling {rope_type!r} (ours is plain RoPE)")
    window, context = hf.get("sliding_window"), hf.get("max_position_embeddings") or 2048
    # a window at least the context long attends as full attention does: that model imports
    sliding = window and hf.get("use_sliding_window", model_type == "mistral")
    numbers = isinstance(window, int | float) and isinstance(context, int | float)
    if sliding and not (numbers and window >= context):
        problems.append(f"sliding-window attention ({window} of a {context}-token context)")
    top, nested = hf.get("rope_theta"), (hf.get("rope_parameters") or {}).get("rope_theta")
    if top is not None and nested is not None and top != nested:
        # transformers 5 reads rope_parameters, 4.x and vLLM rope_theta: the model differs by reader
        problems.append(f"rope_theta {top} disagrees with rope_parameters.rope_theta {nested}")
    if model_type == "qwen3":
        problems.append("Qwen3's per-head q/k norms")
    try:
        hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        head_dim = hf.get("head_dim") or hidden // heads
        if head_dim * heads != hidden:
            problems.append(f"head_dim {head_dim} x {heads} heads != hidden_size {hidden}")
        if problems:
            raise CheckpointError(f"{where}: cannot import this {model_type} model: " + "; ".join(problems))
        theta = nested or top or 10000.0
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            intermediate_size=int(hf["intermediate_size"]),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            rope_theta=float(theta),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: missing field {e.args[0]!r}") from None
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{where}: sizes do not make a valid model: {e}") from None


def _unwrap(model: nn.Module) -> Transformer | RewardModel:
    """The Transformer (or RewardModel) inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``)
    wrappers."""
    while not isinstance(model, Transformer | RewardModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise CheckpointError(
                f"expected an lm.model.Transformer or lm.reward_model.RewardModel, got {type(model).__name__}"
            )
        model = inner
    return model


def _head_fields(net: nn.Module, tokenizer: Any) -> dict[str, Any]:
    """What ``config.json`` says beyond the body: a reward model's one-label head and the pad id that
    transformers uses to find each sequence's last token (``<|pad|>``, which chat text never encodes)."""
    if not isinstance(net, RewardModel):
        return {}
    pad = None
    if tokenizer is not None:
        try:
            pad = tokenizer.token_id("<|pad|>")
        except KeyError:
            pad = getattr(tokenizer, "eot_id", None)
    return {"architectures": [SEQUENCE_CLASSIFIER], "num_labels": 1, "pad_token_id": pad}


def _full_cpu_tensor(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if hasattr(t, "full_tensor"):  # an FSDP2 DTensor: a collective, so every rank must be saving
        t = t.full_tensor()
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.to("cpu").contiguous()


def save_pretrained(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    *,
    eos_token_ids: list[int] | None = None,
) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``out_dir`` in the Hugging Face layout, atomically.

    Everything is written into a temporary sibling directory that replaces ``out_dir`` by rename, so a
    reader never sees half a model. ``dtype`` converts floating weights (default: as they are).
    ``eos_token_ids`` default to the tokenizer's ``<|endoftext|>``; chat models also pass ``<|im_end|>``.
    ``meta`` keys go into raychat.json (conventional ones: stage, step, tokens_seen, source_run).
    """
    net = _unwrap(model)
    out = Path(out_dir)
    if "://" in os.fspath(out_dir):
        raise CheckpointError(f"{out_dir}: save_pretrained writes local directories; upload it afterwards")
    state = net.state_dict()
    if net.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # HF stores a tied matrix once, under embed_tokens
    tensors = {k: _full_cpu_tensor(v, dtype if v.is_floating_point() else None) for k, v in state.items()}
    stored_dtype = tensors["model.embed_tokens.weight"].dtype

    eot = getattr(tokenizer, "eot_id", None) if tokenizer is not None else None
    eos = list(eos_token_ids) if eos_token_ids is not None else ([eot] if eot is not None else [])
    bos = eot  # GPT-2 convention: <|endoftext|> separates (and so starts) documents
    head = _head_fields(net, tokenizer)

    # the same model exported again (a stage run again after it stopped in its evaluation) keeps the
    # files it has: stored evaluations and the fingerprints of runs that start from it stay valid.
    # The weights, config and tokenizer are compared once, below; raychat.json is what is left.
    rest_same = False

    def unchanged(new: Path, old: Path) -> bool:
        old_meta = old / META_FILE
        return rest_same and old_meta.is_file() and filecmp.cmp(new / META_FILE, old_meta, shallow=False)

    with atomic.staged_dir(out, keep_old=unchanged) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic.write_json(tmp / CONFIG_FILE, hf_config_dict(net.config, stored_dtype, bos, eos) | head)
        generation = {"bos_token_id": bos, "eos_token_id": eos[0] if len(eos) == 1 else eos}
        atomic.write_json(tmp / GENERATION_FILE, {k: v for k, v in generation.items() if v not in (None, [])})
        if tokenizer is not None:
            tokenizer.save(tmp)
        record = {
            "format": FORMAT,
            "stage": None,
            "step": None,
            "tokens_seen": None,
            "source_run": None,
            **(meta or {}),
            "created": (meta or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model_config": net.config.model_dump(),
            "num_params": net.num_params(),
        }
        rest_same = atomic.same_files(tmp, out, leaving_out=META_FILE)  # weights, config, tokenizer
        if rest_same:
            record["created"] = _created_if_same(out / META_FILE, record)
        atomic.write_json(tmp / META_FILE, record)
    return out


def _created_if_same(previous: Path, record: dict[str, Any]) -> str:
    """The ``created`` time of the raychat.json at ``previous`` when it records the same as ``record``
    but for that time (so an identical export is byte for byte the same), else ``record``'s. Only
    asked once the other files are known to be the same: a record alone does not tell two models
    apart."""
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return record["created"]
    if not isinstance(old, dict) or not isinstance(old.get("created"), str):
        return record["created"]
    new = json.loads(json.dumps(record, default=str))
    same = {k: v for k, v in old.items() if k != "created"} == {
        k: v for k, v in new.items() if k != "created"
    }
    return old["created"] if same else record["created"]


# -- loading ------------------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    single, index = path / WEIGHTS_FILE, path / INDEX_FILE
    if single.exists():
        if not single.is_file():
            raise CheckpointError(f"{single}: not a file")
        return [single]
    if index.is_file():
        weight_map = read_json_object(index, CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(
                f"{index}: not a safetensors index (no 'weight_map' of tensor -> file name)"
            )
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are missing: {', '.join(missing)}")
        return files
    if (path / "pytorch_model.bin").is_file() or (path / "pytorch_model.bin.index.json").is_file():
        raise CheckpointError(f"{path}: only pickled .bin weights; convert them to safetensors first")
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}")


@contextlib.contextmanager
def _open_weights(f: Path) -> Iterator[Any]:
    """``safe_open`` whose errors (a truncated, empty or foreign file) name the file."""
    try:
        with safe_open(str(f), framework="pt") as sf:
            yield sf
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f}: not a readable safetensors file ({e}); the file is corrupt") from None


def _read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with _open_weights(f) as sf:
            for key in sf.keys():
                if "rotary_emb.inv_freq" in key:
                    continue  # a buffer some exporters save; we recompute it
                tensors[key] = sf.get_tensor(key)
    return tensors


def eos_token_ids(model_dir: str | os.PathLike[str]) -> list[int]:
    """The EOS ids of a model directory (generation_config.json, else config.json), checked: a
    corrupt file or an id that is not an integer raises CheckpointError naming the file."""
    for name in (GENERATION_FILE, CONFIG_FILE):
        path = Path(model_dir) / name
        if not path.exists():
            continue
        eos = read_json_object(path, CheckpointError).get("eos_token_id")
        if eos is None:
            continue
        ids = eos if isinstance(eos, list) else [eos]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise CheckpointError(f"{path}: eos_token_id must be a token id or a list of them, not {eos!r}")
        return list(ids)
    return []


def is_reward_model(root: str | os.PathLike[str]) -> bool:
    """Whether a model directory holds a reward model (``*ForSequenceClassification``), which scores
    text rather than generating it; False when its config.json cannot be read."""
    try:
        hf = read_json_object(Path(root) / CONFIG_FILE, CheckpointError)
    except (CheckpointError, OSError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or [])


def _read_model_files(
    root: Path, architecture: str = CAUSAL_LM
) -> tuple[ModelConfig, dict[str, Any], list[Path]]:
    """The config, the metadata and the weight files of a model directory, every small file read and
    checked first, so that a corrupt one fails at once and by name, before gigabytes of weights.
    ``architecture``: a causal LM (any ``*ForCausalLM``, or none named) or a reward model
    (``*ForSequenceClassification``); a directory of the other kind is refused, saying which it is."""
    if not root.is_dir():
        raise CheckpointError(f"model directory not found: {root}")
    config_path = root / CONFIG_FILE
    try:
        hf = read_json_object(config_path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{root}: no {CONFIG_FILE}; not a model directory") from None
    config = config_from_hf(hf, str(config_path))
    named = hf.get("architectures") or [CAUSAL_LM]
    is_classifier = is_reward_model(root)
    if is_classifier != (architecture == SEQUENCE_CLASSIFIER):
        if is_classifier:
            raise CheckpointError(
                f"{root} holds a reward model ({named[0]}), not a language model; load it with "
                "lm.checkpoint.load_reward_model"
            )
        raise CheckpointError(
            f"{root} holds a language model ({named[0]}), not a reward model; "
            "lm.reward_model.RewardModel.from_base(load_pretrained(dir)[0]) makes one from it"
        )
    if is_classifier and hf.get("num_labels", 1) != 1:  # transformers writes id2label, not num_labels
        raise CheckpointError(f"{config_path}: a reward model has one label, not {hf['num_labels']}")
    labels = hf.get("id2label")
    if is_classifier and isinstance(labels, dict) and len(labels) != 1:
        raise CheckpointError(f"{config_path}: a reward model has one label, not {len(labels)} (id2label)")
    eos_token_ids(root)  # the engines read generation_config.json later, for the EOS ids
    meta_path = root / META_FILE
    if meta_path.exists():
        meta = read_json_object(meta_path, CheckpointError)
    else:
        meta = {"imported_from": str(root), "hf_config": hf}
    return config, meta, _weight_files(root)


def check_model_files(path: str | os.PathLike[str]) -> None:
    """Check a model directory before another loader (vLLM) reads it: the JSON files parse and fit
    our decoder, and every safetensors header reads; the tensors themselves are not loaded. Raises
    CheckpointError naming the file at fault."""
    *_, files = _read_model_files(Path(path))
    for f in files:
        with _open_weights(f) as sf:
            sf.keys()


def load_pretrained(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Transformer, dict[str, Any]]:
    """The model in ``path`` (eval mode, on ``device``) and its raychat.json metadata.

    ``dtype`` converts floating weights (default: as stored). For a checkpoint made elsewhere the
    metadata is ``{"imported_from": path, "hf_config": {...}}``. Any file that is missing, corrupt or
    does not fit raises CheckpointError naming it.
    """
    root = Path(path)
    config, meta, files = _read_model_files(root)
    return _build(Transformer, root, config, files, device, dtype), meta


def load_reward_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[RewardModel, dict[str, Any]]:
    """The reward model in ``path`` (ours, or a ``LlamaForSequenceClassification`` with one label made
    elsewhere), in eval mode on ``device``, and its metadata; errors as ``load_pretrained``'s."""
    root = Path(path)
    config, meta, files = _read_model_files(root, SEQUENCE_CLASSIFIER)
    return _build(RewardModel, root, config, files, device, dtype), meta


def _build(
    cls: type[Transformer] | type[RewardModel],
    root: Path,
    config: ModelConfig,
    files: list[Path],
    device: str | torch.device,
    dtype: torch.dtype | None,
) -> Any:
    """``cls(config)`` holding the weights in ``files``, every name and shape checked first."""
    tensors = _read_tensors(files)
    tied = config.tie_embeddings and cls is Transformer
    if config.tie_embeddings:
        head = tensors.pop("lm_head.weight", None) if tied else tensors.get("lm_head.weight")
        embed = tensors.get("model.embed_tokens.weight")
        if head is not None and embed is not None and not torch.equal(head, embed):
            raise CheckpointError(
                f"{root}: tie_word_embeddings is true but lm_head differs from embed_tokens"
            )

    with torch.device("meta"):
        model = cls(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if tied:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: {tuple(tensors[k].shape)} != {tuple(s)}"
        for k, s in expected.items()
        if k in tensors and tensors[k].shape != s
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:3])}")
        raise CheckpointError(f"{root}: weights do not fit the config: " + "; ".join(parts))

    target = torch.device(device)
    tensors = {
        k: v.to(device=target, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
        for k, v in tensors.items()
    }
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta).to(target)
    model.eval()
    return model


def torch_dtype(name: str | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16`` (for command-line options); None stays None."""
    if name is None:
        return None
    try:
        return _DTYPES_BY_NAME[name.removeprefix("torch.")]
    except KeyError:
        raise CheckpointError(
            f"unknown dtype {name!r}; use one of {', '.join(_DTYPE_NAMES.values())}"
        ) from None
