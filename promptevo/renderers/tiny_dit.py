"""Tiny FLUX and SD3 pipelines: the real architectures (rectified-flow transformers reading CLIP
and T5 text encoders, 16-channel-style latents packed or patched) at toy size, seeded random
weights, built from configs offline and saved as diffusers folders, so `--render-model tiny-flux`
and `tiny-sd3` load through `AutoPipelineForText2Image` like the real models.

The CLIP tokenizer is CLIP's real BPE (open_clip's vocabulary, 77 tokens). No T5 vocabulary
ships offline, so the T5 side reads a stand-in: a Unigram tokenizer trained here on CLIP's
vocabulary words that behaves as T5's does (pieces, `</s>` appended, `<pad>`); windows measured
with it are T5-like, not T5's exact counts.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from promptevo.model_cache import build_once, write_clip_tokenizer

TINY_FLUX, TINY_SD3 = "tiny-flux", "tiny-sd3"


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)


@functools.lru_cache(maxsize=4)
def _t5_like_tokenizer(max_length: int):
    """A fast Unigram tokenizer with T5's special tokens and post-processing (trained once per
    process: a few seconds)."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        words = [w.replace("</w>", "") for w in json.loads((Path(tmp) / "vocab.json").read_text(encoding="utf-8"))]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([w for w in words if w.isascii()], trainers.UnigramTrainer(
        vocab_size=4000, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=max_length)


def _t5_encoder(vocab: int, d_model: int):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))


def _clip_text(with_projection: bool, hidden: int = 32):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=hidden,
                            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                            max_position_embeddings=77, projection_dim=hidden, hidden_act="gelu")
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae(latent_channels: int, **kw):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, layers_per_block=1, norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, sample_size=32, **kw)


def _build_tiny_flux(dest: Path) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                         axes_dims_rope=(4, 4, 8))
    t5 = _t5_like_tokenizer(256)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_clip_text(False), tokenizer=_clip_tokenizer(), text_encoder_2=_t5_encoder(len(t5), 32), tokenizer_2=t5)
    pipe.save_pretrained(dest)


def _build_tiny_sd3(dest: Path) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                                        pooled_projection_dim=64, out_channels=4)
    t5 = _t5_like_tokenizer(256)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_clip_text(True), tokenizer=_clip_tokenizer(), text_encoder_2=_clip_text(True), tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5_encoder(len(t5), 32), tokenizer_3=t5)
    pipe.save_pretrained(dest)


def tiny_flux_path() -> Path:
    return build_once("promptevo-tiny-flux-v1", _build_tiny_flux)


def tiny_sd3_path() -> Path:
    return build_once("promptevo-tiny-sd3-v1", _build_tiny_sd3)


TINY_MODELS = {TINY_FLUX: tiny_flux_path, TINY_SD3: tiny_sd3_path}
