"""p(z | digit) costs the unconditional model nothing: evaluate a model with it installed exactly
as the evaluate stage does (no MLflow) and compare every unconditional number with a baseline.

    python benchmarks/digit_prior_check.py MODEL_WITH_DIGITS.keras BASELINE_EVAL.json OUT.json

MODEL_WITH_DIGITS is the baseline's model plus p(z | digit) (digit_prior_ablation.py --save);
BASELINE_EVAL is the evaluate stage's metrics/eval.json for the baseline model. Prints whether
the test, per-class and sample numbers are identical, the -ELBO and IWAE differences in nats,
and the digit numbers; exit 1 if any unconditional number differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mnist_vae.classifier import load_classifier
from mnist_vae.config import load_params
from mnist_vae.data import load_arrays
from mnist_vae.evaluation import evaluate, test_sets
from mnist_vae.files import write_json
from mnist_vae.model import load_vae


def main(model_path: str, baseline_path: str, out_path: str) -> int:
    params = load_params()
    model = load_vae(model_path)
    classifier = load_classifier(params.paths.classifier)
    grey, binarized = test_sets(load_arrays(params.paths.data), params.data)
    metrics = evaluate(model, classifier, grey.x_test, grey.y_test, binarized, params.evaluate)
    write_json(out_path, metrics)
    base = json.loads(Path(baseline_path).read_text())
    same = all(metrics[k] == base[k] for k in ("test", "per_class", "samples"))
    for section in ("test", "per_class", "samples"):
        print(f"{section}: {'identical' if metrics[section] == base[section] else 'DIFFERENT'}")
    new, old = metrics["test"]["bernoulli"], base["test"]["bernoulli"]
    print(f"-ELBO {old['neg_elbo']:.4f} -> {new['neg_elbo']:.4f} nats "
          f"({new['neg_elbo'] - old['neg_elbo']:+.6f}); IWAE {old['iwae_nll']:.4f} -> "
          f"{new['iwae_nll']:.4f} ({new['iwae_nll'] - old['iwae_nll']:+.6f})")
    digits = metrics["digits"]
    print(f"agreement {digits['agreement']:.4f} (worst digit {digits['agreement_min']:.4f}), "
          f"mean per-digit Frechet {digits['frechet_mean']:.3f}")
    for d, v in digits["per_digit"].items():
        print(f"  {d}: agreement {v['agreement']:.4f}, Frechet {v['frechet']:.3f} "
              f"(floor {v['frechet_floor']:.3f})")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    raise SystemExit(main(*sys.argv[1:]))
