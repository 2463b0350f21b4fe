"""The analysis recipes' parameters (ensemble, measures, random_features). Torch-free."""

from __future__ import annotations

from overparam.methods import declare
from overparam.params import Param, Spec

AVERAGES = ("probs", "logits")

INGREDIENTS = Param("ingredients", "runs", None, "runs to study: run dirs (dir or dir@tag), a multirun dir or a glob",
                    optional=True)

ENSEMBLE = Spec("ensemble", [
    INGREDIENTS,
    Param("ensemble.average", "choice", "probs", "probs: mean of softmax probabilities | logits: softmax of the mean "
          "logits", choices=AVERAGES),
], doc="Output ensemble of the ingredients.")

MEASURES = Spec("measures", [
    INGREDIENTS,
    Param("measures.margin_percentile", "float", 10, "the margin is this percentile of the training margins",
          low=0.0, high=100.0, low_open=True),
    Param("measures.pacbayes_samples", "int", 10, "PAC-Bayes: Monte Carlo draws per trial sigma", low=1),
    Param("measures.pacbayes_depth", "int", 15, "PAC-Bayes: bisection steps", low=1),
    Param("measures.pacbayes_target", "float", 0.1, "PAC-Bayes: training-accuracy change the perturbation causes",
          low=0.0, high=1.0, low_open=True, high_open=True),
    Param("measures.magnitude_eps", "float", 0.001, "magnitude-aware perturbation's eps", low=0.0),
    Param("measures.max_examples", "int", None, "measure on a seeded subset of this many examples (null: all)",
          low=1, optional=True),
], doc="Generalization measures ranked against the gap.")

RANDOM_FEATURES = Spec("random_features", [
    Param("random_features.width", "int", 1000, "number of random features", low=1),
    Param("random_features.train_samples", "int", None, "fit on a seeded subset of this many examples (null: all)",
          low=1, optional=True),
    Param("random_features.ridge", "float", 0.0, "0: min-norm least squares | > 0: ridge regression", low=0.0),
], doc="Random ReLU features with an exact least-squares readout.")

declare(ENSEMBLE, "analysis", check=True)
declare(MEASURES, "analysis", check=True)
declare(RANDOM_FEATURES, "analysis")
