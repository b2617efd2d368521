"""Text tower: the real packaged MiniLM offline, masked mean pooling, locking, persistence."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig

from longvivit.config import TextEncoderConfig
from longvivit.models.text_encoder import TextEncoder, mean_pool


def tiny_bert(num_layers: int = 3) -> BertConfig:
    return BertConfig(hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    enc = TextEncoder(TextEncoderConfig(embed_dim=24, max_length=32))  # name_or_path=None: packaged MiniLM
    return enc.eval()


# ----------------------------------------------------------------- real packaged model
@pytest.mark.integration
def test_packaged_minilm_loads_offline(minilm):
    assert type(minilm.model).__name__ == "BertModel"
    assert minilm.hidden_size == 384 and minilm.num_layers == 6
    assert minilm.model.pooler is None  # unused by mean pooling, so dropped


@pytest.mark.integration
def test_pooled_embedding_ranks_paraphrase_above_unrelated(minilm):
    texts = ["A man is playing a guitar on stage.",
             "Someone performs a song on an acoustic guitar.",
             "The central bank raised interest rates again."]
    with torch.no_grad():
        pooled = F.normalize(minilm.pooled(**minilm.tokenize(texts)), dim=-1)  # (3, 384)
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2, sim


@pytest.mark.integration
def test_projection_output_shape(minilm):
    with torch.no_grad():
        out = minilm.encode(["a dog runs on the beach", "two cats"])
    assert out.shape == (2, 24) and torch.isfinite(out).all()


@pytest.mark.integration
def test_mean_pooling_ignores_padding(minilm):
    short = "a red car"
    with torch.no_grad():
        alone = minilm.pooled(**minilm.tokenize([short]))
        tokens = minilm.tokenize([short, "a much longer caption that forces several padding tokens on the first"])
        assert (tokens["attention_mask"][0] == 0).any()  # the short text really is padded
        batched = minilm.pooled(**tokens)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------- tiny random tower
def test_mean_pool_weights_only_unmasked_positions():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)  # (B=1, L=4, D=3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), hidden[:, :2].mean(dim=1))


def test_tokenize_truncates_and_returns_ids_and_mask():
    enc = TextEncoder.from_config(tiny_bert(), cfg=TextEncoderConfig(embed_dim=8, max_length=6))
    tokens = enc.tokenize(["one two three four five six seven eight", "hi"])
    assert set(tokens) == {"input_ids", "attention_mask"}
    assert tokens["input_ids"].shape == (2, 6)
    assert tokens["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]  # [CLS] hi [SEP] + padding
    assert enc.tokenize(["a b c d e f g h i j"], max_length=4)["input_ids"].shape == (1, 4)
    with pytest.raises(TypeError):
        enc.tokenize("not a list")


def _trainable(enc: TextEncoder) -> set[str]:
    return {n for n, p in enc.named_parameters() if p.requires_grad}


def test_lock_keeps_only_last_layers_and_proj_trainable():
    enc = TextEncoder.from_config(tiny_bert(3), cfg=TextEncoderConfig(embed_dim=8, lock=True, unlocked_layers=1))
    trainable = _trainable(enc)
    assert "proj.weight" in trainable
    assert any(n.startswith("model.encoder.layer.2.") for n in trainable)
    assert all(n == "proj.weight" or n.startswith("model.encoder.layer.2.") for n in trainable), trainable
    assert any("layer.2.output.LayerNorm" in n for n in trainable)  # the unlocked layer keeps its norm
    assert not any("embeddings" in n for n in trainable)

    # gradients reach exactly the trainable set
    enc(**enc.tokenize(["a caption", "another one"])).sum().backward()
    with_grad = {n for n, p in enc.named_parameters() if p.grad is not None}
    assert with_grad == trainable

    enc.lock(0)
    assert _trainable(enc) == {"proj.weight"}
    enc.unlock()
    assert _trainable(enc) == {n for n, _ in enc.named_parameters()}
    with pytest.raises(ValueError, match="unlocked_layers"):
        enc.lock(4)


def test_locked_layers_stay_in_eval_mode_so_frozen_features_are_deterministic():
    cfg = TextEncoderConfig(embed_dim=8, lock=True, unlocked_layers=1)
    enc = TextEncoder.from_config(BertConfig(**tiny_bert(3).to_dict() | {"hidden_dropout_prob": 0.5}), cfg=cfg)
    enc.train()
    layers = enc.model.encoder.layer
    assert [m.training for m in layers] == [False, False, True] and not enc.model.embeddings.training
    enc.lock(0)
    assert not any(m.training for m in layers)
    tok = enc.tokenize(["a red circle moves left", "the blue square grows"])
    torch.testing.assert_close(enc.pooled(**tok), enc.pooled(**tok))  # dropout off in the frozen tower
    enc.unlock()
    assert all(m.training for m in layers)
    assert not torch.equal(enc.pooled(**tok), enc.pooled(**tok))  # an unlocked tower trains with dropout


def test_unlocked_tower_trains_everything():
    enc = TextEncoder.from_config(tiny_bert(2), cfg=TextEncoderConfig(embed_dim=8))
    enc(**enc.tokenize(["a caption", "another one"])).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not missing, missing


def test_save_and_load_round_trip(tmp_path):
    enc = TextEncoder.from_config(tiny_bert(2), cfg=TextEncoderConfig(embed_dim=8, lock=True, unlocked_layers=1))
    enc.eval()
    tokens = enc.tokenize(["a caption", "a longer caption than that"])
    enc.save_pretrained(tmp_path / "text")
    loaded = TextEncoder.from_pretrained(tmp_path / "text").eval()
    torch.testing.assert_close(loaded(**tokens), enc(**tokens))
    assert loaded.cfg.lock and loaded.cfg.unlocked_layers == 1
    assert _trainable(loaded) == _trainable(enc)
    assert loaded.tokenize(["a caption"])["input_ids"].tolist() == enc.tokenize(["a caption"])["input_ids"].tolist()


def test_a_saved_tower_reloads_by_name_without_a_missing_pooler_report(tmp_path, capsys, caplog):
    enc = TextEncoder.from_config(tiny_bert(2), cfg=TextEncoderConfig(embed_dim=8))
    enc.save_pretrained(tmp_path / "text")
    capsys.readouterr()
    caplog.clear()
    # The path eval takes: a config naming the folder (not from_pretrained), as exported models record it.
    again = TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path / "text"), embed_dim=8))
    assert again.model.pooler is None
    report = capsys.readouterr()
    logged = report.out + report.err + caplog.text
    assert "MISSING" not in logged and "pooler" not in logged, logged


def test_from_config_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        TextEncoder.from_config(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=64))


def test_loading_and_saving_the_tower_prints_no_progress_bar(tmp_path):
    # transformers draws a "Loading weights: 100%|..." bar per call; at every stage, evaluation and export of a
    # run it was noise. The caller's own setting is left as it was.
    code = (
        "import transformers.utils.logging as l\n"
        "from longvivit.config import TextEncoderConfig\n"
        "from longvivit.models.text_encoder import TextEncoder\n"
        f"TextEncoder(TextEncoderConfig()).save_pretrained({str(tmp_path)!r})\n"
        f"TextEncoder.from_pretrained({str(tmp_path)!r})\n"
        "assert l.is_progress_bar_enabled()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Loading weights" not in out.stderr and "Writing model shards" not in out.stderr, out.stderr
