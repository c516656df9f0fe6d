import pickle

import pytest

from safeview.config import ConfigError, ScanConfig


@pytest.mark.parametrize("settings, message", [
    ({"mode": "fast"}, "mode: Input should be 'hide', 'paper' or 'minimal'"),
    ({"attribution": "saliency"}, "unknown attribution method 'saliency'"),
    ({"segmentation": "slic", "segmentation_params": {"segments": 9}}, "segmentation 'slic' takes no parameter segments"),
    ({"style": "swirl"}, "swirl"),
    ({"rationale": "gpt"}, "unknown rationale backend 'gpt'"),
    ({"rationale": "openai", "rationale_options": {"base_url": "http://x"}}, "needs model"),
    ({"rationale": "evidence", "rationale_options": {"vlm": "x"}}, "takes no option vlm"),
    ({"perturbations": ("jpeg", "sepia")}, "sepia"),
    ({"attributes": ("ocr", "faces")}, "unknown attribute detector(s) faces"),
    ({"models": " , "}, "no models"),
    ({"fallback": "blank"}, "fallback"),
    ({"margin": 0.5}, "margin must lie in"),
    ({"working_side": 10}, "working_side"),
    ({"marging": 0.3}, "marging: unknown setting"),
])
def test_bad_settings_fail_when_built_in_one_line(settings, message):
    with pytest.raises(ConfigError) as info:
        ScanConfig.build(**settings)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_config_is_frozen_picklable_and_feeds_cse():
    config = ScanConfig(mode="paper", segmentation="slic", segmentation_params={"n_segments": 30}, margin=0.25)
    with pytest.raises(Exception):
        config.mode = "hide"  # frozen: validated once, never changed behind the validation
    again = pickle.loads(pickle.dumps(config))  # worker processes and Ray actors get it as plain data
    assert again == config and again.cse.mode == "paper" and dict(again.cse.segmentation_params) == {"n_segments": 30}
    assert config.cse.stop_level == pytest.approx(0.5)  # paper mode stops at the flip
    assert config.updated(mode="hide").cse.stop_level == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        config.updated(mode="other")


def test_toml_file_with_overrides(tmp_path):
    path = tmp_path / "scan.toml"
    path.write_text('mode = "minimal"\nattributes = []\nperturbations = ["jpeg"]\n[style_params]\nsigma = 9\n', encoding="utf-8")
    config = ScanConfig.from_toml(path, margin=0.1)
    assert (config.mode, config.attributes, config.perturbations, config.margin) == ("minimal", (), ("jpeg",), 0.1)
    (tmp_path / "broken.toml").write_text("mode = \n")
    with pytest.raises(ConfigError, match="broken.toml: not a readable TOML file"):
        ScanConfig.from_toml(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="missing.toml: no such configuration file"):
        ScanConfig.from_toml(tmp_path / "missing.toml")


def test_service_settings_are_validated_when_the_service_is_configured(tmp_path):
    from safeview.service.config import ServiceConfig

    with pytest.raises(ConfigError, match="unknown attribution"):
        ServiceConfig(db_url=f"sqlite:///{tmp_path}/db.sqlite", storage=tmp_path / "s", scan={"attribution": "x"})
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path}/db.sqlite", storage=tmp_path / "s", models="demo", scan={"mode": "paper"})
    assert isinstance(config.scan, ScanConfig) and config.scan.models == "demo" and config.scan.mode == "paper"
