"""Stage evaluate: test-set likelihood bounds and classifier-judged sample quality.

Writes the numbers to `paths.metrics` and the protocol and timings (bookkeeping, not metrics)
to `paths.eval_facts`; the register stage logs both to the MLflow run.
"""

import sys

from mnist_vae.classifier import ClassifierError, load_classifier
from mnist_vae.config import load_params
from mnist_vae.data import DataError, load_arrays
from mnist_vae.evaluation import evaluate, evaluation_sets
from mnist_vae.files import write_json_files
from mnist_vae.model import ModelFileError, load_vae
from mnist_vae.stage_exit import run_stage


def main() -> None:
    params = load_params()
    model = load_vae(params.paths.model)
    classifier = load_classifier(params.paths.classifier)
    grey, binarized = evaluation_sets(load_arrays(params.paths.data), params.data)
    metrics = evaluate(model, classifier, grey.x_test, grey.y_test, binarized, params.evaluate)
    facts = metrics.pop("meta")  # what was measured and how long it took
    # register logs the two together: a failure leaves both as they were
    write_json_files({params.paths.metrics: metrics, params.paths.eval_facts: facts})
    test, samples, view = metrics["test"], metrics["samples"], facts["trained_view"]
    print(f"evaluate: -ELBO {test['bernoulli']['neg_elbo']:.2f} nats, "
          f"IWAE NLL ({view}) {test[view]['iwae_nll']:.2f} nats, "
          f"{samples['recognisable']:.1%} recognisable samples, "
          f"Frechet {samples['frechet']:.2f} (floor {samples['frechet_floor']:.2f}), "
          f"{facts['seconds']['total']:.0f} s")
    if "digits" in metrics:
        digits = metrics["digits"]
        print(f"evaluate: digits asked for and read as such {digits['agreement']:.1%} "
              f"(worst digit {digits['agreement_min']:.1%}), "
              f"mean per-digit Frechet {digits['frechet_mean']:.2f}")
        styles = digits["styles"]
        print(f"evaluate: test images redrawn as another digit and read as it "
              f"{styles['agreement']:.1%} (worst digit {styles['agreement_min']:.1%}), "
              f"ink kept {styles['ink_correlation']:.2f} (reconstructions "
              f"{styles['ink_correlation_reconstruction']:.2f})")


if __name__ == "__main__":  # a bad or missing input: one line and exit code 1
    sys.exit(run_stage(main, "evaluate", ModelFileError, ClassifierError, DataError))
