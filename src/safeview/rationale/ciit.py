"""CIIT — the Conditional Image Instruction-guided Transformer of ConditionalVLM (paper, "Conditional
Vision-Language Model", eqs. 1–3) on top of transformers' ``InstructBlipForConditionalGeneration``.

The conditioned instruct prompt (the prior, :mod:`.prompts`) goes to the Q-Former and to the LLM,
and a learned control embedding — a linear projection of the control code — is added to every
Q-Former instruction-token embedding, scaled by the guidance weight ``w`` (1 by default; ``w = 0``
is the paper's ablation). Training minimises eq. 3, the negative log-likelihood of the answer
tokens given image, instruction and control code, with the vision encoder and the LLM frozen.

A checkpoint written by :meth:`ConditionalBlip.save` holds only what CIIT trains (Q-Former, query
tokens, language projection, control projection) plus ``ciit.json`` naming the base InstructBLIP
directory; nothing is ever downloaded.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .control import ControlCode

CIIT_CONFIG = "ciit.json"
CIIT_WEIGHTS = "ciit.safetensors"
#: parameter-name prefixes CIIT trains (everything else — vision encoder, LLM — stays frozen)
TRAINED = ("qformer.", "query_tokens", "language_projection.")


class ConditionalBlip(nn.Module):
    """InstructBLIP + control projection. ``categories`` fixes the order of the control code."""

    def __init__(self, model, processor, categories: Sequence[str], *, base: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.categories = tuple(categories)
        self.base = base
        hidden = model.config.qformer_config.hidden_size
        self.control_projection = nn.Linear(2 * len(self.categories), hidden)
        # zero start: an untrained projection leaves the base model's behaviour unchanged
        nn.init.zeros_(self.control_projection.weight)
        nn.init.zeros_(self.control_projection.bias)
        self.control_projection.to(next(model.qformer.parameters()).device)
        self._control: torch.Tensor | None = None
        model.qformer.embeddings.word_embeddings.register_forward_hook(self._add_control)

    # -- conditioning -------------------------------------------------------------------------
    def _add_control(self, module, inputs, output):
        if self._control is None:
            return output
        return output + self._control[:, None, :].to(output.dtype)

    @contextmanager
    def conditioned(self, controls: Sequence[ControlCode], guidance: float):
        """Within the block, the Q-Former's instruction embeddings get ``guidance × P·code``."""
        codes = torch.as_tensor(np.stack([c.vector(self.categories) for c in controls]))
        codes = codes.to(self.control_projection.weight.device)
        self._control = guidance * self.control_projection(codes)
        try:
            yield
        finally:
            self._control = None

    def freeze(self) -> list[nn.Parameter]:
        """Freeze the vision encoder and the LLM; return the parameters CIIT trains."""
        trained = []
        for name, param in self.model.named_parameters():
            param.requires_grad = name.startswith(TRAINED)
            if param.requires_grad:
                trained.append(param)
        return trained + list(self.control_projection.parameters())

    # -- batches ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.control_projection.weight.device

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        pixels = self.processor.image_processor(images=[np.array(i) for i in images], return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, next(self.model.vision_model.parameters()).dtype)

    def _qformer_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.processor.qformer_tokenizer(list(prompts), padding=True, return_tensors="pt")
        return {"qformer_input_ids": enc["input_ids"].to(self.device), "qformer_attention_mask": enc["attention_mask"].to(self.device)}

    def _prompt_ids(self, prompt: str) -> list[int]:
        cfg = self.model.config
        return [cfg.image_token_id] * cfg.num_query_tokens + self.processor.tokenizer(prompt)["input_ids"]

    def _pad_id(self) -> int:
        tok = self.processor.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def batch(self, images: Sequence[np.ndarray], prompts: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs with eq. 3's labels: answer tokens only; prompt, image slots and padding are −100."""
        tok, pad = self.processor.tokenizer, self._pad_id()
        out = {"pixel_values": self._pixels(images), **self._qformer_inputs(prompts)}
        answer_ids = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
        if self.model.config.use_decoder_only_language_model:
            rows = [(self._prompt_ids(p), a) for p, a in zip(prompts, answer_ids)]
            width = max(len(p) + len(a) for p, a in rows)
            ids = torch.full((len(rows), width), pad)
            labels = torch.full((len(rows), width), -100)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (p, a) in enumerate(rows):  # right padding
                ids[i, : len(p) + len(a)] = torch.tensor(p + a)
                labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
                mask[i, : len(p) + len(a)] = 1
        else:  # encoder-decoder LLM (Flan-T5): the answer is the decoder's target
            ids, mask = self._left_padded([self._prompt_ids(p) for p in prompts])
            width = max(len(a) for a in answer_ids)
            labels = torch.full((len(answer_ids), width), -100)
            for i, a in enumerate(answer_ids):
                labels[i, : len(a)] = torch.tensor(a)
        return {**out, "input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "labels": labels.to(self.device)}

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id())
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        return ids, mask

    # -- eq. 3 and generation -----------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], controls: Sequence[ControlCode], *, guidance: float = 1.0) -> torch.Tensor:
        """Eq. 3: mean NLL of the answer tokens given image, instruction and control code."""
        with self.conditioned(controls, guidance):
            return self.model(**batch).loss

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        controls: Sequence[ControlCode],
        *,
        guidance: float = 1.0,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """Answer each (image, prompt) under its control code (greedy by default; the paper used
        5 beams and repetition penalty 1.5 on the 13B model)."""
        ids, mask = self._left_padded([self._prompt_ids(p) for p in prompts])
        with self.conditioned(controls, guidance):
            out = self.model.generate(
                pixel_values=self._pixels(images),
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                repetition_penalty=repetition_penalty,
                do_sample=False,
                pad_token_id=self._pad_id(),
                **self._qformer_inputs(prompts),
            )
        if self.model.config.use_decoder_only_language_model:
            out = out[:, ids.shape[1] :]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # -- persistence --------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        state = {f"model.{k}": v for k, v in self.model.state_dict().items() if k.startswith(TRAINED)}
        state.update({f"control_projection.{k}": v for k, v in self.control_projection.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def save(self, directory: str | Path, **extra) -> Path:
        """Write the trained CIIT weights and ``ciit.json`` (base directory, categories, ``extra``)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trained_state(), str(directory / CIIT_WEIGHTS))
        meta = {"base": self.base, "categories": list(self.categories), **extra}
        (directory / CIIT_CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return directory

    def load_trained(self, directory: str | Path) -> dict:
        """Overlay the weights of a CIIT checkpoint; return its ``ciit.json``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / CIIT_CONFIG).read_text(encoding="utf-8"))
        if list(meta["categories"]) != list(self.categories):
            raise ModelError(f"{directory}: checkpoint categories {meta['categories']} differ from {list(self.categories)}")
        state = load_file(str(directory / CIIT_WEIGHTS))
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")}, strict=False)
        self.control_projection.load_state_dict({k[19:]: v for k, v in state.items() if k.startswith("control_projection.")})
        return meta

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        categories: Sequence[str] | None = None,
        base: str | Path | None = None,
        device: str = "cpu",
        quantize: str | None = None,
    ) -> "ConditionalBlip":
        """Load a CIIT checkpoint (a directory with ``ciit.json``) or a plain local InstructBLIP
        checkpoint directory (then the control projection starts at zero). ``quantize`` is ``"8bit"``
        or ``"4bit"`` (needs bitsandbytes and a GPU). Never downloads."""
        path = Path(path)
        meta = json.loads((path / CIIT_CONFIG).read_text(encoding="utf-8")) if (path / CIIT_CONFIG).exists() else None
        base_dir = Path(base) if base is not None else Path(meta["base"]) if meta and meta.get("base") else path
        cats = list(categories) if categories is not None else meta["categories"] if meta else None
        if cats is None:
            from ..schema import CATEGORIES

            cats = list(CATEGORIES)
        model, processor = load_instructblip(base_dir, device=device, quantize=quantize)
        ciit = cls(model, processor, cats, base=str(base_dir.resolve()))
        if meta is not None:
            ciit.load_trained(path)
        return ciit.eval()


def load_instructblip(path: str | Path, *, device: str = "cpu", quantize: str | None = None):
    """``(InstructBlipForConditionalGeneration, InstructBlipProcessor)`` from a local directory only."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    path = Path(path)
    if not (path / "config.json").exists():
        raise ModelError(f"{path} is not a local InstructBLIP checkpoint directory (no config.json); SafeView never downloads")
    kwargs: dict = {"local_files_only": True}
    if quantize:
        if quantize not in ("8bit", "4bit"):
            raise ModelError(f"quantize must be '8bit' or '4bit', not {quantize!r}")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise ModelError("8-bit/4-bit loading needs the bitsandbytes package") from exc
        if not torch.cuda.is_available():
            raise ModelError("8-bit/4-bit loading needs a CUDA GPU")
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=quantize == "8bit", load_in_4bit=quantize == "4bit")
        kwargs["device_map"] = {"": 0}
    try:
        model = InstructBlipForConditionalGeneration.from_pretrained(str(path), **kwargs)
        processor = InstructBlipProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load InstructBLIP from {path}: {exc}") from exc
    if not quantize:
        model.to(device)
    return model.eval(), processor
