"""``longvivit caption`` with the packaged SmolLM2-135M and a tiny exported encoder, on a real video file.

Loading the GGUF costs ~40 s on 2 cores (transformers parses it three times); the load converts it once
into an HF folder in ``$LONGVIVIT_CACHE`` and the CLI then loads that copy in ~2 s.
"""

from __future__ import annotations

import pytest
import torch
from captioning_helpers import build_tiny_encoder
from conftest import ASSETS

from longvivit.captioning import cli
from longvivit.captioning.model import CaptionerConfig, VideoToText
from longvivit.captioning.resampler import ResamplerConfig
from longvivit.captioning.xattn import XAttnConfig

pytestmark = pytest.mark.integration


def test_caption_cli_prints_smollm2_text_for_a_real_video(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGVIVIT_CACHE", str(tmp_path / "cache"))
    cfg = CaptionerConfig(encoder=str(build_tiny_encoder(tmp_path / "export")), num_frames=4, image_size=32,
                          resampler=ResamplerConfig(depth=1, hidden=32, heads=2, ff_dim=64),
                          xattn=XAttnConfig(every=10, heads=2, dim_head=16, ff_mult=0.25),
                          prompt="A video of")
    model = VideoToText.build(cfg).eval()  # lm=None: the packaged GGUF
    lm = model.xlm.lm
    assert type(lm).__name__ == "LlamaForCausalLM" and lm.config.num_hidden_layers == 30
    assert model.xlm.wrapped == [0, 10, 20]
    assert all(not p.requires_grad for p in lm.parameters())
    assert any((tmp_path / "cache").rglob("model.safetensors")), "the converted LM was cached"

    ids = torch.tensor([model.tokenizer("A video of").input_ids])
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        media = model.visual_tokens(video)
        assert torch.equal(model.xlm(media, input_ids=ids).logits, lm(input_ids=ids).logits), "gates at 0"
        # With closed gates the caption is the LM's own greedy continuation of the prompt.
        plain = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                            do_sample=False, eos_token_id=model.eos_id, pad_token_id=model.pad_id)
    expected = " ".join(model.tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True).split())

    folder = model.save_pretrained(tmp_path / "captioner")
    assert cli.main(["--model", str(folder), "--video", str(ASSETS / "bigbuckbunny.mp4"),
                     "--max-new-tokens", "8"]) == 0
    caption = capsys.readouterr().out.strip()
    assert caption and caption == expected

    # Sampling from SmolLM2's own 49k-token distribution: restricted to the top token it is greedy search, and with
    # a seed it is reproducible (a second load of the cached LM samples the same text).
    video = ["--model", str(folder), "--video", str(ASSETS / "bigbuckbunny.mp4"), "--max-new-tokens", "8"]
    assert cli.main([*video, "--do-sample", "--top-k", "1", "--temperature", "0.7"]) == 0
    assert capsys.readouterr().out.strip() == expected
    free = ["--do-sample", "--temperature", "1.3", "--top-k", "0", "--top-p", "0.98", "--seed", "3"]
    samples = []
    for _ in range(2):
        assert cli.main([*video, *free]) == 0
        samples.append(capsys.readouterr().out.strip())
    assert samples[0] == samples[1] and samples[0] != expected, samples
