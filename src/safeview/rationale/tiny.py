"""A tiny InstructBLIP built from a config (vision, Q-Former and OPT LLM of hidden size 32, 2
layers) with word-level tokenizers trained in code on a given text corpus. No weights exist to
download here, so tests and ``bench/vlm.py`` use it to show that CIIT training (eq. 3) and the
control embedding work; it is not a useful captioner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")


def word_tokenizer(texts: Iterable[str]):
    """A lower-case word-level ``PreTrainedTokenizerFast`` whose vocabulary is the words of ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=list(SPECIALS)))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return fast


def tiny_instructblip(
    texts: Iterable[str], *, image_size: int = 32, hidden: int = 32, layers: int = 2, num_query_tokens: int = 4, llm: str = "opt", seed: int = 0
):
    """``(model, processor)``: a randomly initialised tiny InstructBLIP whose tokenizers know ``texts``;
    ``llm`` is ``"opt"`` (decoder-only, like Vicuna) or ``"t5"`` (encoder-decoder, like Flan-T5)."""
    import torch
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
        OPTConfig,
        T5Config,
    )

    texts = list(texts)
    tokenizer = word_tokenizer(texts)
    qformer_tokenizer = word_tokenizer(texts)
    vocab = len(tokenizer)
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if llm == "opt":
        text_config = OPTConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, ffn_dim=2 * hidden,
            word_embed_proj_dim=hidden, max_position_embeddings=128, dropout=0.0, attention_dropout=0.0,
            bos_token_id=tokenizer.bos_token_id, **special,
        )
    elif llm == "t5":
        text_config = T5Config(
            vocab_size=vocab, d_model=hidden, d_kv=hidden // 2, d_ff=2 * hidden, num_layers=layers, num_heads=2,
            dropout_rate=0.0, decoder_start_token_id=tokenizer.pad_token_id, **special,
        )
    else:
        raise ValueError(f"llm must be 'opt' or 't5', not {llm!r}")
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden)
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(image_size=image_size, patch_size=8, attention_dropout=0.0, **common).to_dict(),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(qformer_tokenizer), encoder_hidden_size=hidden, cross_attention_frequency=1,
            max_position_embeddings=128, pad_token_id=qformer_tokenizer.pad_token_id,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common,
        ).to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = InstructBlipProcessor(image_processor, tokenizer, qformer_tokenizer, num_query_tokens=num_query_tokens)
    return model, processor


def pretrain_language_model(model, processor, texts: Iterable[str], *, steps: int = 150, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Stand in for the LLM's pre-training and for BLIP-2's stage-2 alignment: fit the tiny OPT to
    ``texts`` (each as ``<image>×Q <s> text </s>``), where each text gets its own learned embeddings
    in the image slots (discarded afterwards). The frozen LLM can then produce the texts and has
    learnt to read the image slots, so CIIT only has to learn which text the image and control code
    call for. Returns the losses."""
    import torch

    texts = list(texts)
    tok, lm = processor.tokenizer, model.language_model
    n_query = model.config.num_query_tokens
    enc = tok(texts, padding=True, return_tensors="pt")
    ids = torch.cat([enc["input_ids"], torch.full((len(texts), 1), tok.pad_token_id)], 1)
    ids[torch.arange(len(ids)), enc["attention_mask"].sum(1)] = tok.eos_token_id
    mask = torch.cat([torch.ones(len(texts), n_query, dtype=torch.long), (ids != tok.pad_token_id).long()], 1)
    labels = torch.cat([torch.full((len(texts), n_query), -100), ids.masked_fill(ids == tok.pad_token_id, -100)], 1)
    torch.manual_seed(seed)
    slots = torch.nn.Parameter(0.02 * torch.randn(len(texts), n_query, lm.config.hidden_size))
    optimizer = torch.optim.AdamW([*lm.parameters(), slots], lr=lr)
    losses = []
    lm.train()
    for _ in range(steps):
        embeds = torch.cat([slots, lm.get_input_embeddings()(ids)], 1)
        loss = lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    lm.eval()
    return losses


def save_tiny(directory: str | Path, texts: Iterable[str], **kwargs) -> Path:
    """Write a tiny InstructBLIP checkpoint directory (config, weights, processor) for ``--base``,
    its LLM pre-trained on ``texts``."""
    texts = list(texts)
    model, processor = tiny_instructblip(texts, **kwargs)
    pretrain_language_model(model, processor, texts)
    directory = Path(directory)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


#: category-specific answers of the synthetic experiment (``None``: a safe image)
SYNTHETIC_ANSWERS: dict[str | None, str] = {
    "sexual": "the image shows nudity in a sexually suggestive context",
    "cyberbullying": "a person makes a rude middle finger gesture beside hateful text",
    "self_harm": "the skin shows cuts and blood from self harm",
    None: "nothing unsafe is visible in the image",
}


def simulated_control(category: str | None, rng, categories: tuple[str, ...]) -> dict[str, float]:
    """A stand-in for the classifiers' output on a synthetic image of ``category``: the flagged
    category at 0.75–1.0, the others at 0–0.3 (used only where no trained classifiers are at hand)."""
    return {c: float(rng.uniform(0.75, 1.0) if c == category else rng.uniform(0.0, 0.3)) for c in categories}


def synthetic_records(n_per_class: int, *, seed: int = 0, size: int = 96, questions: tuple[str, ...] = (), classifiers=None) -> list[dict]:
    """Records (image array, question, answer, category, control) on :mod:`safeview.synth` stand-in
    images: ``n_per_class`` unsafe images per category plus as many safe ones. The control code comes
    from ``classifiers`` when given, else from :func:`simulated_control`."""
    import numpy as np

    from ..schema import CATEGORIES
    from ..synth import make_sample
    from .control import control_code
    from .prompts import load_templates

    questions = questions or load_templates().generic
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_per_class):
        for k, category in enumerate((*CATEGORIES, None)):
            sample = make_sample(category or CATEGORIES[i % len(CATEGORIES)], category is not None, seed=seed * 100_003 + 4 * i + k, size=max(size, 64))
            control = (
                control_code(classifiers, sample.image).probabilities if classifiers else simulated_control(category, rng, CATEGORIES)
            )
            records.append({
                "image": sample.image, "question": questions[int(rng.integers(len(questions)))],
                "answer": SYNTHETIC_ANSWERS[category], "category": category, "control": control,
            })
    return records
