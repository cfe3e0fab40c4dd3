"""Evaluation protocols: kNN, linear probe and collapse diagnostics on a frozen encoder; fine-tuning on
a labelled fraction and semi-supervised distillation (SimCLR v2) on a copy of it."""

from selfsup.eval.diagnostics import effective_rank, embedding_std
from selfsup.eval.distill import DistillConfig, distill, distillation_loss, load_student
from selfsup.nn.features import extract_features
from selfsup.eval.features import raw_pixel_features
from selfsup.eval.finetune import FinetuneConfig, finetune, finetune_classifier
from selfsup.eval.knn import knn_accuracy, knn_predict
from selfsup.eval.linear import fit_logistic, linear_probe

__all__ = [
    "DistillConfig",
    "FinetuneConfig",
    "distill",
    "distillation_loss",
    "effective_rank",
    "embedding_std",
    "extract_features",
    "finetune",
    "finetune_classifier",
    "fit_logistic",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "load_student",
    "raw_pixel_features",
]
