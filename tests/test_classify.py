import numpy as np
import pytest
import torch

from safeview import nets
from safeview.classify import (
    MODEL_SETS,
    Classifier,
    Preprocess,
    load_checkpoint,
    load_classifier,
    load_model_set,
)
from safeview.errors import ModelError


@pytest.fixture
def small_classifier() -> Classifier:
    torch.manual_seed(0)
    module = nets.build("small", 2, width=8)
    return Classifier.from_module(
        module, ["safe", "unsafe"], ["unsafe"], name="tiny", category="cyberbullying", preprocess=Preprocess(resize=(48, 48))
    )


def test_predict_proba_batches_and_sizes(small_classifier, photo):
    probs = small_classifier.predict_proba([photo, photo[:50, :70]])
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(small_classifier(photo[None]), probs[:1], atol=1e-6)
    assert small_classifier.unsafe_probability(probs).shape == (2,)


def test_preprocess_imagenet_normalisation_and_bgr():
    image = np.full((10, 10, 3), (255, 0, 0), np.uint8)
    x = Preprocess(resize=(10, 10)).array(image)
    np.testing.assert_allclose(x[:, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5)
    y = Preprocess(resize=(10, 10), channels="BGR", mean=(0, 0, 0), std=(1, 1, 1), scale=1.0).array(image)
    np.testing.assert_allclose(y[:, 0, 0], [0, 0, 255])


@pytest.mark.parametrize(
    "preprocess",
    [Preprocess(resize=(24, 20)), Preprocess(resize=(24, 24), crop=(16, 16), channels="BGR", mean=(104.0, 117.0, 123.0),
                                             std=(1.0, 1.0, 1.0), scale=1.0, jpeg_quality=75)],
)
def test_preprocess_values_are_those_of_the_plain_formula(preprocess):
    # (pixel · scale − mean) / std on the H×W×3 float32 array, channels reordered, then C×h×w:
    # the written-in-place version must give exactly these float32 values, not merely close ones
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    reference = Preprocess(**{**preprocess.__dict__, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0,
                              "channels": "RGB"}).array(image).transpose(1, 2, 0)  # the cropped (JPEG'd) pixels
    x = reference * np.float32(preprocess.scale)
    if preprocess.channels == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)
    np.testing.assert_array_equal(preprocess.array(image), x.transpose(2, 0, 1))


def test_preprocess_crop_maps_back():
    p = Preprocess(resize=(8, 8), crop=(4, 4))
    back = p.to_image(np.ones((4, 4), np.float32), (8, 8))
    assert back.sum() == 16 and back[2:6, 2:6].all() and back[0].sum() == 0


def test_checkpoint_round_trip(tmp_path, small_classifier, photo):
    small_classifier.metadata["accuracy"] = 0.9
    path = small_classifier.save(tmp_path / "m.safeview", arch="small", arch_kwargs={"width": 8})
    loaded = load_checkpoint(path)
    assert loaded.labels == ["safe", "unsafe"] and loaded.unsafe_labels == ["unsafe"]
    assert loaded.category == "cyberbullying" and loaded.preprocess == small_classifier.preprocess
    assert loaded.metadata["accuracy"] == 0.9 and len(loaded.metadata["sha256"]) == 64
    np.testing.assert_allclose(loaded.predict_proba(photo[None]), small_classifier.predict_proba(photo[None]), atol=1e-6)
    assert load_classifier(str(path)).name == "tiny"


def test_bad_checkpoints_are_clear_errors(tmp_path, small_classifier):
    junk = tmp_path / "junk.safeview"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.safeview: not a readable SafeView checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(ModelError, match="no such model file"):
        load_checkpoint(tmp_path / "missing.safeview")
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(ModelError, match="missing format marker"):
        load_checkpoint(other)
    mismatched = small_classifier.save(tmp_path / "mm.safeview", arch="small", arch_kwargs={"width": 16})
    with pytest.raises(ModelError, match="do not match architecture"):
        load_checkpoint(mismatched)
    with pytest.raises(ModelError, match="unknown model"):
        load_classifier("no-such-model")


def test_unsafe_labels_must_be_proper_subset():
    with pytest.raises(ModelError):
        Classifier.from_module(nets.build("small", 2, width=8), ["a", "b"], ["c"])
    with pytest.raises(ModelError):
        Classifier.from_module(nets.build("small", 2, width=8), ["a", "b"], ["a", "b"])


def test_model_sets():
    assert MODEL_SETS["default"] == ("open-nsfw",)
    assert len(MODEL_SETS["demo"]) == 3
    with pytest.raises(ModelError, match="no models given"):
        load_model_set(" , ")


def test_update_checkpoint_metadata_keeps_the_weights(tmp_path, small_classifier, photo):
    from safeview.classify import update_checkpoint_metadata

    path = small_classifier.save(tmp_path / "m.safeview", arch="small", arch_kwargs={"width": 8})
    update_checkpoint_metadata(path, {"real_false_alarm_rate": 0.0, "real_false_alarm_images": 36})
    loaded = load_checkpoint(path)
    assert loaded.metadata["real_false_alarm_images"] == 36 and loaded.name == "tiny"
    np.testing.assert_allclose(loaded.predict_proba(photo[None]), small_classifier.predict_proba(photo[None]), atol=1e-6)
    (tmp_path / "junk.safeview").write_bytes(b"junk")
    with pytest.raises(ModelError):
        update_checkpoint_metadata(tmp_path / "junk.safeview", {"x": 1})


def test_remembered_forwards_each_input_once_and_only_inside_the_block():
    from scenes import RedDetector

    from safeview.classify import remembered

    clf = RedDetector.build()
    calls = []
    clf.module.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2))
    first = clf.predict_proba([a, b])
    with remembered([clf]):
        inside = clf.predict_proba([a, b, a])  # a repeated in the batch: forwarded once
        again = clf.predict_proba([b, a])  # both known
    assert calls == [2, 2]
    np.testing.assert_allclose(inside, first[[0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(again, first[[1, 0]], atol=1e-6)
    clf.predict_proba([a])  # the block is over: forwarded again
    assert calls == [2, 2, 1]


def test_a_runtime_serves_only_the_weights_it_was_built_from(monkeypatch):
    """A classifier predicts through its runtime only while its module has the weights the runtime
    was made from; inside :func:`remembered`, where they cannot change, they are compared once."""
    import dataclasses

    import torch

    from safeview import classify as classify_module
    from safeview.classify import remembered
    from safeview.runtime import TorchRuntime

    torch.manual_seed(0)
    module = nets.build("small", 2, width=8).eval()
    base = Classifier.from_module(module, ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32)))
    clf = dataclasses.replace(base, runtime=TorchRuntime(module, (32, 32)))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    served = []
    runtime = clf.runtime
    monkeypatch.setattr(clf, "runtime", lambda batch: served.append(len(batch)) or runtime(batch))
    clf.predict_proba(image[None])
    assert served == [1]
    with torch.no_grad():
        module.fc.bias += 3.0  # changed in place: the runtime no longer computes this module
    changed = clf.predict_proba(image[None])
    assert served == [1]
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(clf.batch(image[None]))), 1).numpy()
    np.testing.assert_allclose(changed, expected, atol=1e-6)

    clf = dataclasses.replace(base, runtime=TorchRuntime(module, (32, 32)))  # built from the new weights
    walks = []
    version = classify_module._weights_version
    monkeypatch.setattr(classify_module, "_weights_version", lambda m: walks.append(1) or version(m))
    other = np.zeros_like(image)
    with remembered([clf]):
        clf.predict_proba(image[None])
        clf.predict_proba(other[None])
        module.train()  # a module put in training mode is still noticed inside the block
        clf.predict_proba(np.full_like(image, 9)[None])
        module.eval()
    assert len(walks) == 1
    clf.predict_proba(image[None])
    assert len(walks) == 2  # the block is over: compared again
