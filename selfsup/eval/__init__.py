"""Evaluation protocols on a frozen encoder: kNN, linear probe, collapse diagnostics."""
from selfsup.eval.diagnostics import effective_rank, embedding_std
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.knn import knn_accuracy, knn_predict
from selfsup.eval.linear import fit_logistic, linear_probe

__all__ = ["effective_rank", "embedding_std", "extract_features", "fit_logistic", "knn_accuracy", "knn_predict",
           "linear_probe", "raw_pixel_features"]
