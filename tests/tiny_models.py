"""Tiny, randomly initialised models and synthetic media, built locally for the backend tests.

Nothing here touches a model hub: the tokenizer is trained on a few sentences with
``tokenizers``, the models get random weights, and the media are generated with PyAV and
soundfile. The point is to run the real transformers code paths (chat templates, processors,
left-padded batched generation, Qwen2.5-Omni's audio-in-video interleaving) in seconds on a
CPU; the outputs are gibberish by design.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML with Qwen2.5-Omni's media placeholders (the shape of the released template)."""

OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *OMNI_TOKENS.values()]
CORPUS = [
    "We provide two descriptions for a given input: a1 and a2. Please output a1, a2, or same.",
    "The woman smiles and speaks softly; her tone is calm and happy, maybe relieved.",
    "The man frowns, raises his voice and looks angry, then sad and worried.",
    "Please provide a detailed description to a given video, especially focusing on their emotions.",
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group.",
]
VIDEO_SIZE = (56, 56)  # height, width: 4x4 patches of 14 px, 2x2 merged -> 4 tokens per frame pair
VIDEO_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
QWEN_SYSTEM = "You are Qwen, a virtual human developed by the Qwen Team."  # a system prompt the tests pass explicitly


def build_tokenizer(folder: Path, vocab_size: int = 500, named: dict | None = None, chat_template: str = CHAT_TEMPLATE,
                    tail: tuple[str, ...] = (), words: tuple[str, ...] = ()):
    """A byte-level BPE trained here, wrapped as a left-padding Qwen2 tokenizer with ChatML
    (``named``: the family's special tokens by role, Qwen2.5-Omni's media tokens by default;
    ``tail``: special tokens placed after the trained vocabulary, in order, as Gemma 3n's media tables;
    ``words``: literal (non-special) tokens placed before the tail, matched whole in text)."""
    named = OMNI_TOKENS if named is None else named
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(t for t in named.values() if t not in tail)]
    import json

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS * 10, trainer)
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in json.loads(raw.to_str())["model"]["merges"]]
    vocab = raw.get_vocab()
    vocab.update({token: len(vocab) + i for i, token in enumerate((*words, *tail))})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        **named,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in [*specials, *tail]],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in words])
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return tokenizer


def text_config(tokenizer) -> dict:
    """The tiny decoder every model here shares: hidden 64, 2 layers, 4 heads, 2 kv heads."""
    return {
        "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id,
    }


MROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2
VISION = {
    "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "fullatt_block_indexes": [0],
    "window_size": 112,
}
AUDIO = {
    "num_mel_bins": 128, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
    "d_model": 32, "max_source_positions": 1500,
}


HUB_LIKE_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.5, "top_k": 20, "repetition_penalty": 1.1}
"""A released checkpoint's generation_config.json in shape (Qwen2-Audio-7B-Instruct's knobs): it
samples and sets NO length, so transformers alone would stop after 20 new tokens."""


def _save(model, tokenizer, folder: Path, processor=None, hub_like: bool = False, eos: str = "<|im_end|>") -> Path:
    """Random weights, a generation config, and the processor, into ``folder``: a short greedy
    config for fast tests, or with ``hub_like`` one shaped like the hub's (sampling, no length)."""
    from transformers import GenerationConfig

    eos = tokenizer.convert_tokens_to_ids(eos)
    if hub_like:
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.pad_token_id, eos_token_id=[eos, tokenizer.pad_token_id],
            pad_token_id=tokenizer.pad_token_id, **HUB_LIKE_GENERATION,
        )
    else:
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                                   max_new_tokens=8)
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return Path(folder)


def build_text_lm(folder: Path, hub_like: bool = False) -> Path:
    """A 2-layer Qwen2ForCausalLM (hidden 64) with the local tokenizer, saved to ``folder``
    (``hub_like``: with a hub-shaped generation config that sets no length)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**text_config(tokenizer), tie_word_embeddings=True))
    return _save(model, tokenizer, folder, hub_like=hub_like)


def build_omni_thinker(folder: Path) -> Path:
    """A ~250k-parameter Qwen2.5-Omni thinker with a processor assembled from local parts."""
    import torch
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer(folder)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in OMNI_TOKENS.items()}
    config = Qwen2_5OmniThinkerConfig(
        audio_config={**AUDIO, "output_dim": 64, "n_window": 100},
        vision_config=VISION,
        text_config={**text_config(tokenizer), "rope_parameters": MROPE},
        audio_token_index=ids["audio_token"],
        image_token_index=ids["image_token"],
        video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"],
        vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return _save(model, tokenizer, folder, processor)


def build_omni_full(folder: Path, thinker: Path) -> Path:
    """The hub layout of Qwen2.5-Omni (``model_type: qwen2_5_omni``, thinker weights under
    ``thinker.``, a ``spk_dict.pt``) around a tiny thinker; the talker is left out."""
    import shutil

    import torch
    from transformers import AutoConfig, Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    shutil.copytree(thinker, folder, dirs_exist_ok=True)
    config = Qwen2_5OmniConfig(thinker_config=AutoConfig.from_pretrained(thinker).to_dict(), enable_audio_output=False)
    torch.manual_seed(0)
    Qwen2_5OmniForConditionalGeneration(config).save_pretrained(folder)
    torch.save({}, Path(folder) / "spk_dict.pt")
    return Path(folder)


def build_qwen25vl(folder: Path) -> Path:
    """A tiny Qwen2.5-VL (video, no audio) sharing the Omni placeholder tokens."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(folder)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in OMNI_TOKENS.items()}
    config = Qwen2_5_VLConfig(
        text_config={**text_config(tokenizer), "rope_parameters": MROPE}, vision_config=VISION,
        image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"],
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                    tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    return _save(model, tokenizer, folder, processor)


def build_qwen2audio(folder: Path) -> Path:
    """A tiny Qwen2-Audio (audio only) with a Whisper feature extractor of 128 mel bins."""
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = build_tokenizer(folder)
    config = Qwen2AudioConfig(audio_config=AUDIO, text_config={**text_config(tokenizer), "model_type": "qwen2"},
                              audio_token_index=tokenizer.convert_tokens_to_ids(OMNI_TOKENS["audio_token"]))
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config)
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer,
                                    chat_template=CHAT_TEMPLATE)
    return _save(model, tokenizer, folder, processor)


def build_llava_next_video(folder: Path) -> Path:
    """A tiny LLaVA-NeXT-Video: a 2-layer CLIP tower on 56 px frames, a Qwen2 decoder."""
    import torch
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    tokenizer = build_tokenizer(folder)
    side = VIDEO_SIZE[0]
    config = LlavaNextVideoConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": side, "patch_size": 14},
        text_config={**text_config(tokenizer), "model_type": "qwen2"},
        image_token_index=tokenizer.convert_tokens_to_ids(OMNI_TOKENS["image_token"]),
        video_token_index=tokenizer.convert_tokens_to_ids(OMNI_TOKENS["video_token"]),
        image_grid_pinpoints=[[side, side]],
    )
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(config)
    crop = {"height": side, "width": side}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size={"shortest_edge": side}, crop_size=crop),
        image_processor=LlavaNextImageProcessor(size={"shortest_edge": side}, crop_size=crop,
                                                image_grid_pinpoints=[[side, side]]),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=14, vision_feature_select_strategy="default",
        video_token=OMNI_TOKENS["video_token"], image_token=OMNI_TOKENS["image_token"],
    )
    return _save(model, tokenizer, folder, processor)


# -- current families (issue 21): Qwen3-Omni, Qwen3-VL, Gemma 3n, Qwen3 -------------------------------

QWEN3_TOKENS = {
    "image_token": "<|image_pad|>",
    "audio_token": "<|audio_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}
"""The media tokens of Qwen3-Omni / Qwen3-VL, under the role names their processors read."""

QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
"""ChatML with Qwen3's media placeholders, and Qwen3's non-thinking switch: with ``enable_thinking=False``
the released Qwen3 templates pre-fill an empty think block after the assistant header (the shape of it)."""

QWEN3_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
QWEN3_VISION = {
    "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64, "patch_size": 16,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 16, "deepstack_visual_indexes": [0],
}
QWEN3_VIDEO_SIZE = (64, 64)  # 4x4 patches of 16 px, 2x2 merged -> 4 tokens per frame pair
QWEN3_PIXELS = {"shortest_edge": 64 * 64, "longest_edge": 64 * 64 * 8}


def _qwen3_video_processor(processor_class):
    return processor_class(size=QWEN3_PIXELS, patch_size=16, temporal_patch_size=2, merge_size=2)


def build_qwen3_text_lm(folder: Path) -> Path:
    """A 2-layer Qwen3ForCausalLM (hidden 64) whose chat template honours ``enable_thinking``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(folder, named={}, chat_template=QWEN3_CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**text_config(tokenizer), head_dim=16, tie_word_embeddings=True))
    return _save(model, tokenizer, folder)


def _qwen3_tokenizer(folder: Path):
    """The Qwen3 families' tiny tokenizer and the ids of their named media tokens."""
    tokenizer = build_tokenizer(folder, named=QWEN3_TOKENS, chat_template=QWEN3_CHAT_TEMPLATE)
    return tokenizer, {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in QWEN3_TOKENS.items()}


def build_qwen3vl(folder: Path) -> Path:
    """A tiny Qwen3-VL (video, frames timed from their metadata): 1-block 16 px vision tower with one
    deepstack layer, 2-layer decoder with interleaved M-RoPE."""
    import torch
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer, ids = _qwen3_tokenizer(folder)
    config = Qwen3VLConfig(
        text_config={**text_config(tokenizer), "head_dim": 16, "rope_parameters": QWEN3_ROPE},
        vision_config=QWEN3_VISION, image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"],
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16),
                                 video_processor=_qwen3_video_processor(Qwen3VLVideoProcessor),
                                 tokenizer=tokenizer, chat_template=QWEN3_CHAT_TEMPLATE)
    return _save(model, tokenizer, folder, processor)


def build_qwen3omni_thinker(folder: Path) -> Path:
    """A tiny Qwen3-Omni thinker: 1-layer audio encoder, 1-block vision tower, a 2-layer MoE decoder
    (4 experts, 2 per token)."""
    import torch
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeProcessor,
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    folder = Path(folder)
    tokenizer, ids = _qwen3_tokenizer(folder)
    config = Qwen3OmniMoeThinkerConfig(
        audio_config={**AUDIO, "output_dim": 64, "n_window": 50, "n_window_infer": 100, "downsample_hidden_size": 8},
        vision_config=QWEN3_VISION,
        text_config={**text_config(tokenizer), "head_dim": 16, "rope_parameters": QWEN3_ROPE, "num_experts": 4,
                     "num_experts_per_tok": 2, "moe_intermediate_size": 32},
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"],
        # Qwen/Qwen3-Omni-30B-A3B-Instruct config.json, thinker_config.audio_end_token_id (151670, <|audio_end|>):
        # not a declared field of transformers' config class, but the hub's file has it and vLLM 0.33's
        # Qwen3-Omni processor reads it to close each audio span (audio-in-video interleaving).
        audio_end_token_id=ids["audio_eos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        # Qwen/Qwen3-Omni-30B-A3B-Instruct config.json, thinker_config.position_id_per_seconds: 13 (the config
        # class's default of 25 is a Qwen2.5-Omni leftover). The processor interleaves audio and video by the same
        # 13 (transformers 5.20: Qwen3OmniMoeProcessorKwargs._defaults; 5.24: a class attribute), so it is
        # written here as the hub's number rather than read from either transformers' layout.
        position_id_per_seconds=13,
    )
    torch.manual_seed(0)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(config)
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16),
        video_processor=_qwen3_video_processor(Qwen2VLVideoProcessor),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=QWEN3_CHAT_TEMPLATE,
    )
    return _save(model, tokenizer, folder, processor)


def build_qwen3omni_full(folder: Path, thinker: Path) -> Path:
    """The hub layout of Qwen3-Omni (``model_type: qwen3_omni_moe``, thinker weights under ``thinker.``)
    around a tiny thinker; the talker and code2wav are left out (``enable_audio_output: false``)."""
    import shutil

    import torch
    from transformers import (
        AutoConfig,
        GenerationConfig,
        Qwen3OmniMoeConfig,
        Qwen3OmniMoeForConditionalGeneration,
    )

    shutil.copytree(thinker, folder, dirs_exist_ok=True)
    config = Qwen3OmniMoeConfig(thinker_config=AutoConfig.from_pretrained(thinker).to_dict(), enable_audio_output=False)
    torch.manual_seed(0)
    full = Qwen3OmniMoeForConditionalGeneration(config)
    full.generation_config = GenerationConfig(**HUB_LIKE_GENERATION)  # the full model's file, as on the hub
    full.save_pretrained(folder)
    return Path(folder)


GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first = (messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text']) + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ first if loop.first else '' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<audio_soft_token>{% elif part['type'] == 'image' %}<image_soft_token>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format (system text folded into the first user turn, ``model`` as the assistant's role,
``<audio_soft_token>`` where an audio part goes): the shape of Gemma 3n's released template."""

GEMMA_TEXT_TOKENS = {"boi_token": "<start_of_image>", "boa_token": "<start_of_audio>"}
GEMMA_MEDIA_TOKENS = {"eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
                      "eoa_token": "<end_of_audio>", "audio_token": "<audio_soft_token>"}
GEMMA_MEDIA_VOCAB = 4  # ids per modality table (the hub's: 128)


def build_gemma3n(folder: Path) -> Path:
    """A tiny Gemma 3n with Gemma's id layout: text ids, then the vision table (``<end_of_image>``,
    ``<image_soft_token>``...), then the audio table (``<end_of_audio>``, ``<audio_soft_token>``...),
    a 1-layer conformer audio encoder and the processor's fixed 188 audio soft tokens per clip. The
    vision tower is timm's ``test_efficientnet`` (the hub's is timm's MobileNetV5; never called here)."""
    import torch
    from transformers import (
        Gemma3nAudioFeatureExtractor,
        Gemma3nConfig,
        Gemma3nForConditionalGeneration,
        Gemma3nProcessor,
        SiglipImageProcessor,
    )

    folder = Path(folder)
    tail = (GEMMA_MEDIA_TOKENS["eoi_token"], GEMMA_MEDIA_TOKENS["image_token"],
            *[f"<unused_image_{i}>" for i in range(GEMMA_MEDIA_VOCAB - 2)],
            GEMMA_MEDIA_TOKENS["eoa_token"], GEMMA_MEDIA_TOKENS["audio_token"],
            *[f"<unused_audio_{i}>" for i in range(GEMMA_MEDIA_VOCAB - 2)])
    named = {**GEMMA_TEXT_TOKENS, **GEMMA_MEDIA_TOKENS, "bos_token": "<bos>", "start_of_turn": "<start_of_turn>",
             "end_of_turn": "<end_of_turn>"}
    # google/gemma-3n-E2B-it's tokenizer holds newline runs as single pieces ("\n" 107, "\n\n" 108, "\n\n\n",
    # "\n\n\n\n", ...); vLLM 0.33's Gemma 3n processor looks them up by text (gemma3n_mm.py
    # _apply_token_matches) to merge the "\n\n" it inserts around media with neighbouring newlines.
    newlines = tuple("\n" * n for n in range(4, 0, -1))
    tokenizer = build_tokenizer(folder, named=named, chat_template=GEMMA_CHAT_TEMPLATE, tail=tail, words=newlines)
    tokenizer.eos_token = "<end_of_turn>"
    tokenizer.save_pretrained(folder)
    text_vocab = len(tokenizer) - len(tail)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in {**GEMMA_TEXT_TOKENS, **GEMMA_MEDIA_TOKENS}.items()}
    assert ids["eoi_token"] == text_vocab and ids["eoa_token"] == text_vocab + GEMMA_MEDIA_VOCAB
    eos = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    config = Gemma3nConfig(
        text_config={
            "vocab_size": len(tokenizer), "vocab_size_per_layer_input": text_vocab, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "hidden_size_per_layer_input": 8, "laurel_rank": 4, "altup_num_inputs": 2,
            "num_kv_shared_layers": 0, "activation_sparsity_pattern": [0.0, 0.0], "sliding_window": 64,
            "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 4096,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos, "bos_token_id": tokenizer.bos_token_id,
        },
        vision_config={"architecture": "test_efficientnet", "hidden_size": 256, "vocab_size": GEMMA_MEDIA_VOCAB,
                       "vocab_offset": text_vocab},
        audio_config={"hidden_size": 32, "conf_num_attention_heads": 2, "conf_num_hidden_layers": 1,
                      "sscp_conv_channel_size": [8, 4], "vocab_size": GEMMA_MEDIA_VOCAB,
                      "vocab_offset": text_vocab + GEMMA_MEDIA_VOCAB},
        boi_token_id=ids["boi_token"], eoi_token_id=ids["eoi_token"], image_token_id=ids["image_token"],
        boa_token_id=ids["boa_token"], eoa_token_id=ids["eoa_token"], audio_token_id=ids["audio_token"],
        vision_soft_tokens_per_image=4,
    )
    torch.manual_seed(0)
    model = Gemma3nForConditionalGeneration(config)
    processor = Gemma3nProcessor(feature_extractor=Gemma3nAudioFeatureExtractor(), image_processor=SiglipImageProcessor(),
                                 tokenizer=tokenizer, chat_template=GEMMA_CHAT_TEMPLATE, image_seq_length=4)
    return _save(model, tokenizer, folder, processor, eos="<end_of_turn>")


VIDEO_LLAVA_TOKENS = {"image_token": "<image>", "video_token": "<video>"}  # the hub checkpoint's added tokens


def build_video_llava(folder: Path) -> Path:
    """A tiny Video-LLaVA in the hub's -hf layout (``model_type: video_llava``): a 2-layer CLIP tower on
    56 px frames (17 tokens per frame with its CLS), a Qwen2 decoder, the ``<image>``/``<video>`` tokens,
    and VideoLlavaProcessor with its image and video processors. No chat template: the family renders
    its own (``llava_v1``) prompt."""
    import torch
    from transformers import (
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
        VideoLlavaVideoProcessor,
    )

    tokenizer = build_tokenizer(folder, named=VIDEO_LLAVA_TOKENS)
    side = VIDEO_SIZE[0]
    config = VideoLlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": side, "patch_size": 14,
                       "projection_dim": 32},
        text_config={**text_config(tokenizer), "model_type": "qwen2"},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    model = VideoLlavaForConditionalGeneration(config)
    crop = {"height": side, "width": side}
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(size={"shortest_edge": side}, crop_size=crop),
        video_processor=VideoLlavaVideoProcessor(size={"shortest_edge": side}, crop_size=crop),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", **VIDEO_LLAVA_TOKENS,
    )
    return _save(model, tokenizer, folder, processor)


FAMILY_BUILDERS = {
    "qwen25omni": build_omni_thinker, "qwen25vl": build_qwen25vl, "qwen2audio": build_qwen2audio,
    "llavanextvideo": build_llava_next_video, "text": build_text_lm, "qwen25": build_text_lm,
    "qwen3omni": build_qwen3omni_thinker, "qwen3vl": build_qwen3vl, "gemma3n": build_gemma3n,
    "qwen3": build_qwen3_text_lm, "videollava": build_video_llava,
}
"""A tiny checkpoint for every family of ``helpers.judges.families`` (a test checks none is missing), for
contract tests that run each shipped judge's family on a real engine. Qwen3 families use 16-px patches:
give them clips of ``QWEN3_VIDEO_SIZE``."""


def write_mp4(path: Path, *, seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = VIDEO_SIZE,
              tone_hz: float = 440.0, with_audio: bool = True) -> Path:
    """A clip whose colour moves over time, with a sine tone on its audio track."""
    import av

    height, width = size
    rate = 16_000
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if with_audio:
            audio = container.add_stream("aac", rate=rate)
            audio.layout = "mono"
        n_frames = int(seconds * fps)
        for i in range(n_frames):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[..., 0] = int(255 * i / max(n_frames - 1, 1))
            image[:, : (i * width) // n_frames + 1, 1] = 200
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            t = np.arange(int(seconds * rate)) / rate
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, len(wave), chunk):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + chunk], format="flt", layout="mono")
                frame.sample_rate = rate
                frame.time_base = Fraction(1, rate)
                frame.pts = start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return Path(path)


def write_wav(path: Path, *, seconds: float = 2.0, rate: int = 16_000, tone_hz: float = 440.0,
              channels: int = 1) -> Path:
    """A sine tone as a wav file (stereo and other rates test the mono 16 kHz conversion)."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    sf.write(str(path), np.repeat(wave[:, None], channels, axis=1), rate)
    return Path(path)
