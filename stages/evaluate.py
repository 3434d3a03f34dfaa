"""Stage evaluate: test-set likelihood bounds and classifier-judged sample quality."""

from mnist_vae import tracking
from mnist_vae.classifier import load_classifier
from mnist_vae.config import load_params
from mnist_vae.data import load_arrays
from mnist_vae.evaluation import evaluate, test_sets
from mnist_vae.files import write_json
from mnist_vae.model import load_vae


def main() -> None:
    params = load_params()
    # MLflow: adds to the train stage's run; on success logs eval.json and registers the model
    with tracking.stage_run(params, "evaluate"):
        model = load_vae(params.paths.model)
        classifier = load_classifier(params.paths.classifier)
        grey, binarized = test_sets(load_arrays(params.paths.data), params.data)
        metrics = evaluate(model, classifier, grey.x_test, grey.y_test, binarized,
                           params.evaluate)
        write_json(params.paths.metrics, metrics)
        test, samples = metrics["test"], metrics["samples"]
        trained = test[metrics["meta"]["trained_view"]]
        print(f"evaluate: -ELBO {test['bernoulli']['neg_elbo']:.2f} nats, "
              f"IWAE NLL ({metrics['meta']['trained_view']}) {trained['iwae_nll']:.2f} nats, "
              f"{samples['recognisable']:.1%} recognisable samples, "
              f"Frechet {samples['frechet']:.2f} (floor {samples['frechet_floor']:.2f}), "
              f"{metrics['meta']['seconds']['total']:.0f} s")
        if "digits" in metrics:
            digits = metrics["digits"]
            print(f"evaluate: digits asked for and read as such {digits['agreement']:.1%} "
                  f"(worst digit {digits['agreement_min']:.1%}), "
                  f"mean per-digit Frechet {digits['frechet_mean']:.2f}")


if __name__ == "__main__":
    main()
