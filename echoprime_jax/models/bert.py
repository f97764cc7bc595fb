"""BERT encoder (post-LN, Hugging Face `BertModel` semantics) in Flax NNX.

Configured from a Hugging Face `config.json` (`BertConfig.from_hf`), so BiomedBERT-base
(12 x 768, 512 positions, LayerNorm eps 1e-12) and any other BERT checkpoint directory load
without code changes.

`input_ids: (B, S) int`, `attention_mask: (B, S)` (1 = token, 0 = padding; applied to keys),
`token_type_ids: (B, S)` (default zeros) -> last hidden state `(B, S, hidden)`.

Attention (`BertConfig.attention`, see `models/attention.py`): on CPU, XLA's path through
`jax.nn.dot_product_attention` with a boolean key mask; in 16-bit GPU programs cuDNN's fused
kernel, the mask given as each report's length (reports are right-padded: a mask with holes
needs attention="xla"). Attention-probability dropout needs the probabilities, which the fused
kernel does not expose: while it is active (training with attention_probs_dropout_prob > 0)
the layer takes the explicit einsum path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from echoprime_jax.models import attention, cpu_kernels, layers

_ACTIVATIONS = {
    "gelu": layers.gelu,  # HF "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT hyper-parameters; defaults are BiomedBERT-base-uncased."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  pad_token_id: int = 0
  initializer_range: float = 0.02  # std of the normal init of embeddings and linear kernels
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "auto"  # models/attention.py: "auto" | "xla" | "cudnn"
  remat: bool = False  # recompute each layer's activations in the backward pass (memory)

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "BertConfig":
    """From a Hugging Face BERT `config.json` dict (unknown keys are ignored)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"only absolute position embeddings are supported, config has "
                       f"{hf['position_embedding_type']!r}")
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
      raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r}; "
                       f"supported: {sorted(_ACTIVATIONS)}")
    names = {f.name for f in dataclasses.fields(cls)} - {"dtype", "param_dtype", "attention",
                                                          "remat"}
    kw = {k: hf[k] for k in names if k in hf}
    return cls(**kw).replace(**overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
    return cls(**d)

  def replace(self, **kw) -> "BertConfig":
    return dataclasses.replace(self, **kw)


def bert_tiny(**overrides) -> BertConfig:
  """A 2-layer, 64-wide BERT for tests and laptop demos."""
  return BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=128).replace(**overrides)


class Embeddings(nnx.Module):
  """word + position + token type -> LayerNorm -> dropout."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs,
              embedding_init=nnx.initializers.normal(cfg.initializer_range))
    self.word = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
    self.position = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)
    self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, **kw)
    self.norm = layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype, rngs=rngs)
    self.dropout = layers.Dropout(cfg.hidden_dropout_prob, rngs=rngs)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
    """(B, S) ids -> (B, S, hidden)."""
    seq = input_ids.shape[1]
    x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(
        jnp.arange(seq)[None])
    return self.dropout(self.norm(x))


class Layer(nnx.Module):
  """Self-attention -> add & norm -> MLP -> add & norm (post-LN)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    h, dt, pdt = cfg.hidden_size, cfg.dtype, cfg.param_dtype
    init = nnx.initializers.normal(cfg.initializer_range)
    lin = lambda i, o: layers.linear(i, o, dtype=dt, param_dtype=pdt, rngs=rngs, kernel_init=init)
    norm = lambda: layers.layer_norm(h, eps=cfg.layer_norm_eps, dtype=dt, param_dtype=pdt,
                                     rngs=rngs)
    self.num_heads = cfg.num_attention_heads
    self.head_dim = h // cfg.num_attention_heads
    self.query, self.key, self.value = lin(h, h), lin(h, h), lin(h, h)
    self.attn_out = lin(h, h)
    self.attn_norm = norm()
    self.mlp_in = lin(h, cfg.intermediate_size)
    self.mlp_out = lin(cfg.intermediate_size, h)
    self.mlp_norm = norm()
    self.activation = _ACTIVATIONS[cfg.hidden_act]
    self.dropout = layers.Dropout(cfg.hidden_dropout_prob, rngs=rngs)
    self.attn_dropout_rate = cfg.attention_probs_dropout_prob
    self.attn_dropout = layers.Dropout(cfg.attention_probs_dropout_prob, rngs=rngs)
    self.attention = cfg.attention

  def __call__(self, x: jax.Array, key_mask: jax.Array, lengths: jax.Array) -> jax.Array:
    """x: (B, S, hidden); key_mask: (B, 1, 1, S) bool; lengths: (B,) tokens per report
    -> (B, S, hidden)."""
    b, s, h = x.shape
    x = cpu_kernels.materialize_cotangent(x)  # see its docstring: cuts XLA's fused gradient chains
    split = lambda t: t.reshape(b, s, self.num_heads, self.head_dim)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    with jax.named_scope("attention"):  # the AOT report finds each layer's kernel by it
      dropout_off = self.attn_dropout.deterministic or self.attn_dropout_rate == 0.0
      kind = attention.kernel(self.attention, q.dtype, self.head_dim)
      if dropout_off and kind != "xla":
        ctx = attention.fused(q, k, v, scale=self.head_dim ** -0.5, kv_lengths=lengths,
                              kernel=kind)
      elif dropout_off:
        ctx = jax.nn.dot_product_attention(q, k, v, mask=key_mask)
      else:  # attention-probability dropout needs the probabilities: explicit path
        logits = jnp.einsum("bqnd,bknd->bnqk", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
        logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
        probs = self.attn_dropout(
            jax.nn.softmax(logits.astype(jnp.float32), -1).astype(v.dtype))
        ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v)
    x = cpu_kernels.materialize_cotangent(
        self.attn_norm(x + self.dropout(self.attn_out(ctx.reshape(b, s, h)))))
    y = self.mlp_out(self.activation(self.mlp_in(x)))
    return self.mlp_norm(x + self.dropout(y))


class Bert(nnx.Module):
  """The encoder (no pooler: EchoPrime and CLIP-style heads read token 0 of the last layer)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = Embeddings(cfg, rngs=rngs)
    self.layers = nnx.List([Layer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """input_ids: (B, S) int; attention_mask: (B, S) 1/0 -> last hidden state (B, S, hidden)."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    key_mask = attention_mask.astype(bool)[:, None, None, :]
    lengths = attention_mask.astype(jnp.int32).sum(-1)
    x = self.embeddings(input_ids, token_type_ids)
    for i, layer in enumerate(self.layers):
      with jax.named_scope(f"bert_layer{i}"):  # names each layer in the compiled program
        if self.config.remat:  # keep only the layer's input for the backward pass
          x = nnx.remat(lambda lay, x: lay(x, key_mask, lengths))(layer, x)
        else:
          x = layer(x, key_mask, lengths)
    return x
