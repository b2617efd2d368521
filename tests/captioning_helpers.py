"""Tiny real components for the captioning tests: a byte-level BPE tokenizer trained on the spot, a randomly
initialised HF causal LM (Llama or GPT-2 family) saved as an ordinary HF folder, and a tiny saved encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from longvivit.config import VideoEncoderConfig
from longvivit.models.video_encoder import VideoEncoder

# Words of the synthetic demo captions plus a few generic ones; byte-level BPE encodes any other text too.
CORPUS = [
    "the cyan triangle disappears, then the yellow triangle appears, then the yellow triangle shrinks",
    "first the yellow square turns cyan, then the orange square disappears",
    "the red circle moves left and the blue square grows",
    "a video of a rabbit in a green field. question: what does the person do? answer: he opens the door",
] * 4


def build_tiny_lm(directory: Path, family: str = "llama", seed: int = 0, vocab_size: int = 320) -> Path:
    """Write a tokenizer and a random 2-layer causal LM of ``family`` ("llama" or "gpt2") to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    common = {"vocab_size": len(fast), "eos_token_id": fast.eos_token_id, "pad_token_id": fast.pad_token_id}
    if family == "llama":
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **common)
        model = LlamaForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=fast.eos_token_id,
                         **common)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(family)
    model.save_pretrained(directory)
    return directory


def build_tiny_encoder(directory: Path, image_size: int = 32, num_frames: int = 4, seed: int = 0) -> Path:
    """Save a random tiny encoder (2x2 spatial tokens at 32 px) the way an export folder holds it."""
    torch.manual_seed(seed)
    cfg = VideoEncoderConfig.preset("tiny", image_size=image_size, num_frames=num_frames, depth=2)
    enc = VideoEncoder(cfg)
    # Non-zero temporal positions, so that frame order matters to the encoder as it would after training.
    torch.nn.init.normal_(enc.pos_embed_temporal, std=0.02)
    return enc.save_pretrained(directory)


def tiny_model_kwargs(encoder_dir: Path, lm_dir: Path, num_frames: int = 4, image_size: int = 32) -> dict:
    """CaptionerConfig / CaptioningModule arguments for the tiny components."""
    from longvivit.captioning.resampler import ResamplerConfig
    from longvivit.captioning.xattn import XAttnConfig

    return {
        "encoder": str(encoder_dir), "num_frames": num_frames, "image_size": image_size, "lm": str(lm_dir),
        "resampler": ResamplerConfig(depth=1, hidden=32, heads=2, ff_dim=64),
        "xattn": XAttnConfig(every=1, heads=2, dim_head=16, ff_mult=1.0),
        "prompt": "A video of", "max_length": 48,
    }


def open_gates(model, value: float = 0.5, seed: int = 1) -> None:
    """Give every cross-attention block non-zero gates and random weights, so the video changes the LM."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.xlm.xattn:
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)
            for p in block.parameters():
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def build_tiny_captioner(root: Path):
    """A tiny captioner (saved encoder + random Llama) with its gates open, built under ``root``, in eval mode."""
    from longvivit.captioning.model import CaptionerConfig, VideoToText

    kwargs = tiny_model_kwargs(build_tiny_encoder(root / "encoder"), build_tiny_lm(root / "llama"))
    torch.manual_seed(0)
    model = VideoToText.build(CaptionerConfig(**kwargs)).eval()
    open_gates(model)
    return model
