"""CIIT on a tiny InstructBLIP (built from a config, tokenizers built in code, nothing downloaded):
eq. 3 labels, frozen parts, NLL falls, the control embedding steers the answer (w = 1 vs the
paper's w = 0 ablation vs a wrong control code), save/load and resume."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safeview.rationale import rationale  # noqa: E402
from safeview.rationale.ciit import ConditionalBlip  # noqa: E402
from safeview.rationale.control import ControlCode  # noqa: E402
from safeview.rationale.prompts import attribute_match, load_templates  # noqa: E402
from safeview.rationale.tiny import SYNTHETIC_ANSWERS, pretrain_language_model, synthetic_records, tiny_instructblip  # noqa: E402
from safeview.rationale.train import TrainConfig, prepare, train_ciit  # noqa: E402
from safeview.synth import CATEGORIES  # noqa: E402

TEXTS = [q + " " + a for q in load_templates().generic for a in SYNTHETIC_ANSWERS.values()]


def _tiny(tmp_path=None):
    model, processor = tiny_instructblip(TEXTS)
    pretrain_language_model(model, processor, TEXTS)
    if tmp_path is not None:  # an on-disk base checkpoint, as `--base` would name
        model.save_pretrained(str(tmp_path))
        processor.save_pretrained(str(tmp_path))
    return ConditionalBlip(model, processor, CATEGORIES, base=str(tmp_path) if tmp_path else None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("base")
    ciit = _tiny(base)
    frozen = {k: v.clone() for k, v in ciit.model.state_dict().items() if k.startswith(("vision_model.", "language_model."))}
    qformer_before = ciit.model.qformer.embeddings.word_embeddings.weight.clone()
    data = prepare(synthetic_records(16, seed=0), prior=False)  # the control code is the only category channel
    out = tmp_path_factory.mktemp("ciit")
    history = train_ciit(ciit, data, out, config=TrainConfig(epochs=10, batch_size=8, lr=3e-3, warmup=0.05), resume=False)
    test = prepare(synthetic_records(4, seed=1), prior=False)
    return {"ciit": ciit, "history": history, "out": out, "test": test, "frozen": frozen, "qformer_before": qformer_before}


def _match_rate(ciit, test, *, guidance=1.0, controls=None):
    unsafe = [d for d in test if d["category"]]
    controls = controls or [d["control"] for d in unsafe]
    answers = ciit.generate([d["image"] for d in unsafe], [d["prompt"] for d in unsafe], controls, guidance=guidance, max_new_tokens=14)
    return float(np.mean([attribute_match(a, d["category"]) for a, d in zip(answers, unsafe)])), answers


def test_labels_keep_only_answer_tokens():
    ciit = ConditionalBlip(*tiny_instructblip(TEXTS), CATEGORIES)
    image = np.zeros((40, 40, 3), np.uint8)
    batch = ciit.batch([image, image], ["what is happening in the image ?"] * 2, ["nothing unsafe", SYNTHETIC_ANSWERS["sexual"]])
    tok = ciit.processor.tokenizer
    for row_ids, row_labels, answer in zip(batch["input_ids"], batch["labels"], ["nothing unsafe", SYNTHETIC_ANSWERS["sexual"]]):
        kept = row_labels[row_labels != -100].tolist()
        assert kept == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert (row_ids[row_labels != -100] == row_labels[row_labels != -100]).all()
    # the shorter row is right-padded, and its padding is masked
    assert (batch["labels"][0][batch["attention_mask"][0] == 0] == -100).all() and (batch["attention_mask"][0] == 0).any()


def test_nll_falls_and_only_ciit_is_trained(trained):
    h = trained["history"]
    assert np.mean(h[-10:]) < 0.3 * np.mean(h[:10])
    state = trained["ciit"].model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in trained["frozen"].items())
    assert not torch.equal(trained["qformer_before"], trained["ciit"].model.qformer.embeddings.word_embeddings.weight)
    assert trained["ciit"].control_projection.weight.abs().sum() > 0


def test_guidance_steers_the_rationale(trained):
    ciit, test = trained["ciit"], trained["test"]
    with_guidance, answers = _match_rate(ciit, test, guidance=1.0)
    ablated, _ = _match_rate(ciit, test, guidance=0.0)
    unsafe = [d for d in test if d["category"]]
    rotated = [ControlCode({c: d["control"].probabilities[CATEGORIES[(i + 1) % 3]] for i, c in enumerate(CATEGORIES)}) for d in unsafe]
    wrong, _ = _match_rate(ciit, test, controls=rotated)
    assert with_guidance >= 0.8, answers
    assert with_guidance - ablated >= 0.5
    assert with_guidance - wrong >= 0.5


def test_checkpoint_round_trip_and_dispatch(trained):
    ciit, test = trained["ciit"], trained["test"]
    loaded = ConditionalBlip.load(trained["out"])
    d = test[0]
    args = ([d["image"]], [d["prompt"]], [d["control"]])
    assert loaded.generate(*args) == ciit.generate(*args)
    r = rationale(d["image"], d["control"], {}, backend="instructblip", vlm=str(trained["out"]), prior=False, question=d["prompt"])
    assert r.backend == "instructblip" and r.text == ciit.generate(*args)[0] and r.evidence["guidance"] == 1.0
    with pytest.raises(ValueError, match="vlm=PATH"):
        rationale(d["image"], d["control"], {}, backend="instructblip")


def test_resume_continues_from_latest_checkpoint(tmp_path):
    torch.set_num_threads(1)
    data = prepare(synthetic_records(2, seed=3), prior=True)
    first = train_ciit(_tiny(), data, tmp_path, config=TrainConfig(epochs=1, batch_size=4, lr=1e-3))
    assert (tmp_path / "checkpoint-2").is_dir() and len(first) == 2
    resumed = train_ciit(_tiny(), data, tmp_path, config=TrainConfig(epochs=2, batch_size=4, lr=1e-3))
    assert len(resumed) == 4 and resumed[:2] == first and (tmp_path / "checkpoint-4").is_dir()


def test_encoder_decoder_llm_gets_answer_as_target():
    torch.set_num_threads(1)
    ciit = ConditionalBlip(*tiny_instructblip(TEXTS, llm="t5"), CATEGORIES)
    image = np.zeros((40, 40, 3), np.uint8)
    batch = ciit.batch([image] * 2, ["what is happening in the image ?"] * 2, ["nothing unsafe", "the skin shows cuts"])
    tok = ciit.processor.tokenizer
    assert batch["labels"][1].tolist() == tok("the skin shows cuts", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert batch["labels"][0].tolist()[-1] == -100  # padding of the shorter answer
    code = [ControlCode({"sexual": 0.9})] * 2
    assert torch.isfinite(ciit.loss(batch, code))
    assert len(ciit.generate([image] * 2, ["what is happening in the image ?"] * 2, code, max_new_tokens=3)) == 2
