"""The Model Registry on real, private SQLite stores: versions, the challenger/champion
aliases, the digit generator's input checks, and loading in a fresh process."""

import json
import shutil
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_helpers import (
    METRIC,
    store_uri,
    subprocess_env,
    tiny_autoregressive_vae,
    tiny_params,
)
from mnist_vae import registry, tracking_store
from mnist_vae.model import load_vae

NAME = "mnist-vae"


def _register(store, vae_file, value, params=None):
    """Log the tiny VAE in a new run and register it with test metric `value`."""
    params = params or tiny_params()
    experiment_id = tracking_store.connect(params.tracking, store)
    model = store / "vae.keras"
    shutil.copyfile(vae_file, model)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = registry.log_model(model, params.tracking)
        return registry.register(info, run.info.run_id, {METRIC: value}, params)


def _aliases(client):
    return {alias: str(client.get_model_version_by_alias(NAME, alias).version)
            for alias in (registry.CHALLENGER, registry.CHAMPION)}


def test_first_version_is_challenger_and_champion_with_tags_and_description(store,
                                                                           tiny_vae_file):
    version = _register(store, tiny_vae_file, 100.0)
    client = MlflowClient()
    assert _aliases(client) == {"challenger": "1", "champion": "1"}
    assert version.tags["run_id"] == version.run_id
    assert float(version.tags[METRIC]) == 100.0
    assert version.tags[registry.TAG_METRIC] == METRIC
    assert version.tags["protocol.data.test_limit"] == "0"
    assert METRIC in version.description and version.run_id in version.description
    assert "models:/mnist-vae@champion" in client.get_registered_model(NAME).description


def test_a_worse_challenger_does_not_take_champion_a_better_one_does(store, tiny_vae_file):
    client = MlflowClient()
    _register(store, tiny_vae_file, 100.0)
    _register(store, tiny_vae_file, 105.0)
    assert _aliases(client) == {"challenger": "2", "champion": "1"}
    _register(store, tiny_vae_file, 100.0)  # a tie does not dethrone the champion either
    assert _aliases(client) == {"challenger": "3", "champion": "1"}
    _register(store, tiny_vae_file, 95.0)
    assert _aliases(client) == {"challenger": "4", "champion": "4"}


def test_the_direction_is_a_param(store, tiny_vae_file):
    params = tiny_params(tracking={"champion_direction": "maximize"})
    client = MlflowClient()
    _register(store, tiny_vae_file, 0.5, params)
    _register(store, tiny_vae_file, 0.4, params)
    assert _aliases(client)["champion"] == "1"
    _register(store, tiny_vae_file, 0.6, params)
    assert _aliases(client)["champion"] == "3"


def test_a_different_evaluation_protocol_never_takes_champion(store, tiny_vae_file, capsys):
    client = MlflowClient()
    _register(store, tiny_vae_file, 100.0)
    _register(store, tiny_vae_file, 50.0, tiny_params(data={"test_limit": 500}))
    assert _aliases(client) == {"challenger": "2", "champion": "1"}
    assert "differs from champion (version 1) in data.test_limit" in capsys.readouterr().out


def test_a_missing_metric_registers_nothing(store, tiny_vae_file):
    params = tiny_params()
    tracking_store.connect(params.tracking, store)
    with pytest.raises(registry.RegistryError, match="not among the test metrics"):
        registry.register(None, "run", {"test/other": 1.0}, params)
    assert MlflowClient().search_model_versions(f"name='{NAME}'") == []


def test_the_default_model_name_is_params_tracking_registered_model(repo_root):
    from mnist_vae.config import load_params

    name = load_params(repo_root / "params.yaml").tracking.registered_model
    assert name == registry.DEFAULT_NAME
    assert registry.model_uri("champion") == f"models:/{name}@champion"


def test_model_uri_accepts_aliases_versions_and_uris():
    assert registry.model_uri("champion") == "models:/mnist-vae@champion"
    assert registry.model_uri("3") == "models:/mnist-vae/3"
    assert registry.model_uri("runs:/abc/model") == "runs:/abc/model"


def test_the_generator_draws_digits_and_rejects_bad_input(store, tiny_vae_file):
    _register(store, tiny_vae_file, 100.0)
    generator = registry.load_generator("champion")
    z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    images = generator.predict(pd.DataFrame({"z": list(z)}))  # the signature's column
    assert images.shape == (4, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    expected = np.asarray(load_vae(tiny_vae_file).decode(z))[..., 0]
    np.testing.assert_allclose(images, expected, atol=1e-6)

    bad = {
        "width": np.zeros((2, 5), "float32"),
        "rows": np.zeros((257, 3), "float32"),
        "nan": np.array([[np.nan, 0, 0]], "float32"),
        "one number a row": np.zeros((3, 1), "float32")[:, 0],
    }
    for what, z_bad in bad.items():
        with pytest.raises(MlflowException) as err:
            generator.predict(pd.DataFrame({"z": list(z_bad)}))
        assert err.value.get_http_status_code() == 400, what
    with pytest.raises(MlflowException, match="between 1 and 256 latent vectors"):
        generator.predict(pd.DataFrame({"z": list(bad["rows"])}))
    with pytest.raises(MlflowException, match="send latent vectors as the column z"):
        generator.predict(z)  # MLflow's column check drops unnamed columns


@pytest.mark.slow
def test_registry_load_works_in_a_fresh_process(store, tiny_vae_file):
    """A new interpreter gets the VAE and the generator, importing the package the model
    carries (`code/`) ahead of any installed copy."""
    _register(store, tiny_vae_file, 100.0)
    script = textwrap.dedent("""
        import json, sys
        import mlflow
        import numpy as np
        import pandas as pd
        generator = mlflow.pyfunc.load_model("models:/mnist-vae@champion")  # as a server does
        loader = sys.modules["mnist_vae.registry"].__file__
        from mnist_vae import registry
        vae = registry.load("champion")
        z = np.ones((2, 3), "float32")
        print(json.dumps({
            "type": type(vae).__name__,
            "decode": np.asarray(vae.decode(z))[..., 0].tolist(),
            "generated": generator.predict(pd.DataFrame({"z": list(z)})).tolist(),
            "loader": loader,
        }))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=store, capture_output=True,
                          text=True, timeout=300,
                          env=subprocess_env(MLFLOW_TRACKING_URI=store_uri(store)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    expected = np.asarray(load_vae(tiny_vae_file).decode(np.ones((2, 3), "float32")))[..., 0]
    assert out["type"] == "VAE"
    assert "/code/mnist_vae/registry.py" in out["loader"], "the model's own copy of the code"
    np.testing.assert_allclose(out["decode"], expected, atol=1e-6)
    np.testing.assert_allclose(out["generated"], expected, atol=1e-6)


def test_settle_champion_moves_a_stale_champion_to_the_best_comparable_version(store,
                                                                                tiny_vae_file):
    client = MlflowClient()
    for value in (100.0, 90.0, 95.0):
        _register(store, tiny_vae_file, value)
    _register(store, tiny_vae_file, 50.0, tiny_params(data={"test_limit": 7}))  # other protocol
    assert _aliases(client) == {"challenger": "4", "champion": "2"}
    # a pipeline that read the registry before version 2 existed writes its stale choice last
    client.set_registered_model_alias(NAME, registry.CHAMPION, "1")
    registry.settle_champion(client, tiny_params())
    assert _aliases(client)["champion"] == "2"


def test_a_registration_failing_half_way_leaves_the_aliases_as_they_were(store, tiny_vae_file,
                                                                         monkeypatch):
    client = MlflowClient()
    _register(store, tiny_vae_file, 100.0)
    _register(store, tiny_vae_file, 105.0)
    set_alias = MlflowClient.set_registered_model_alias

    def failing_champion(self, name, alias, version):
        if alias == registry.CHAMPION and str(version) == "3":
            raise MlflowException("injected: the server died while moving the alias")
        return set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing_champion)
    with pytest.raises(MlflowException, match="injected"):
        _register(store, tiny_vae_file, 90.0)  # better: would take champion
    assert _aliases(client) == {"challenger": "2", "champion": "1"}
    assert [v.version for v in client.search_model_versions(f"name = '{NAME}'")
            if str(v.version) == "3"] == []


def test_a_champion_that_cannot_be_read_is_never_replaced(store, tiny_vae_file, monkeypatch,
                                                          capsys):
    client = MlflowClient()
    _register(store, tiny_vae_file, 100.0)
    by_alias = MlflowClient.get_model_version_by_alias

    def unreadable(self, name, alias):
        if alias == registry.CHAMPION:
            raise MlflowException("injected: registry timed out", error_code="INTERNAL_ERROR")
        return by_alias(self, name, alias)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unreadable)
    _register(store, tiny_vae_file, 90.0)
    monkeypatch.undo()
    assert _aliases(client) == {"challenger": "2", "champion": "1"}
    assert "version 2 stays challenger: cannot read mnist-vae@champion" in capsys.readouterr().out


def test_the_generator_draws_the_digits_asked_for_and_rejects_bad_ones(store, tiny_vae_file):
    _register(store, tiny_vae_file, 100.0)
    generator = registry.load_generator("champion")
    vae = load_vae(tiny_vae_file)
    records = pd.DataFrame({"digit": [7, 2], "seed": [3, 0]})
    images = generator.predict(records)
    assert images.shape == (2, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], np.asarray(vae.sample(1, 3, digit=7))[0, ..., 0],
                               atol=1e-6)
    np.testing.assert_allclose(generator.predict(pd.DataFrame({"digit": [2]}))[0], images[1],
                               atol=1e-6)  # seed 0 when none is given
    # out of range: the generator; not a whole number: MLflow's check of the signature's longs
    bad = {"10": [10], "-1": [-1], "'x'": ["x"], "2.5": [2.5], "True": [True]}
    for shown, digits in bad.items():
        message = (f"digit must be 0-9, got {shown}" if shown in ("10", "-1")
                   else "Incompatible input types for column digit")
        with pytest.raises(MlflowException, match=message) as err:
            generator.predict(pd.DataFrame({"digit": digits}))
        assert err.value.get_http_status_code() == 400
    for frame, message in [(pd.DataFrame({"digit": [1], "seed": [-2]}), "seed must be"),
                           (pd.DataFrame({"digit": [1] * 257}), "between 1 and 256 records"),
                           (pd.DataFrame({"digit": [1], "z": [[0.0] * 3]}), "not both")]:
        with pytest.raises(MlflowException, match=message):
            generator.predict(frame)
    # MLflow drops a column the signature lacks before the model sees it (the serving gate
    # refuses it over HTTP); the generator itself refuses it too
    with pytest.raises(MlflowException, match="digit and seed only"):
        registry.DigitGenerator(vae, 16).predict(pd.DataFrame({"digit": [1], "colour": [3]}))


def test_a_registered_autoregressive_model_draws_what_the_model_draws(store, tmp_path):
    vae = tiny_autoregressive_vae(seed=6)
    vae.save(tmp_path / "ar.keras")
    _register(store, tmp_path / "ar.keras", 100.0)
    generator = registry.load_generator("champion")
    z = np.random.default_rng(1).standard_normal((3, 3)).astype("float32")
    images = generator.predict(pd.DataFrame({"z": list(z)}))
    assert images.shape == (3, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images, np.asarray(vae.decode(z))[..., 0], atol=1e-6)
    drawn = generator.predict(pd.DataFrame({"digit": [4], "seed": [2]}))
    np.testing.assert_allclose(drawn[0], np.asarray(vae.sample(1, 2, digit=4))[0, ..., 0],
                               atol=1e-6)


def test_drawing_defaults_to_the_champion_when_the_store_has_one(store, tiny_vae_file):
    from mnist_vae import drawing

    (store / "models").mkdir()
    shutil.copyfile(tiny_vae_file, store / "models" / "vae.keras")
    assert drawing.open_model(root=store)[1] == "models/vae.keras"  # a store, no champion yet
    _register(store, tiny_vae_file, 100.0)
    model, origin = drawing.open_model(root=store)
    assert origin == "models:/mnist-vae@champion" and model.draws_digits
    assert drawing.open_model("models:/mnist-vae/1", root=store)[1] == "models:/mnist-vae/1"
    with pytest.raises(drawing.DrawError, match="models:/mnist-vae/7"):
        drawing.open_model("models:/mnist-vae/7", root=store)
