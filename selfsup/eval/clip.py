"""Zero-shot classification and image-text retrieval for image-text models (CLIP).

Zero-shot (Radford et al. 2021, sec. 3.1.2): each class name is written into one or more prompts
("a photo of a {label}"), the prompts are encoded by the text encoder (several prompts per class
averaged: prompt ensembling, sec. 3.1.4), and each image takes the class whose text embedding is
most similar — no training, no labelled example. Retrieval: on pairs of test images and their
captions, how often the right caption (image -> text) or the right image (text -> image) is among
the top 1 and top 5 by similarity.
"""

from __future__ import annotations

import torch

from selfsup.data.text import tokenize
from selfsup.errors import SelfsupError
from selfsup.nn.features import extract_features


def encode_images(method, images: torch.Tensor, mean, std, size: int, device="cpu", batch_size: int = 512):
    """Normalised image embeddings [N, D] of uint8 images."""
    return extract_features(method, images, mean, std, size, batch_size, runtime=device, forward=method.encode_image)


@torch.no_grad()
def encode_texts(method, texts: list[str], device="cpu", batch_size: int = 512) -> torch.Tensor:
    method.eval()
    ids = tokenize(texts, method.cfg.context)
    return torch.cat(
        [method.encode_text(ids[i : i + batch_size].to(device)).cpu() for i in range(0, len(ids), batch_size)]
    )


def class_prompts(classes: list[str], prompts: list[str]) -> list[list[str]]:
    """For each class, its prompts: "{label}" in each template replaced by the class name."""
    bad = [p for p in prompts if "{label}" not in p]
    if bad:
        raise SelfsupError(
            f"prompt {bad[0]!r} has no {{label}} to put the class name in, e.g. 'a photo of a {{label}}'"
        )
    return [[p.format(label=c) for p in prompts] for c in classes]


def zero_shot(image_emb: torch.Tensor, labels: torch.Tensor, text_emb: torch.Tensor) -> dict:
    """image_emb [N, D], text_emb [K, P, D] (K classes x P prompts, normalised) -> top-1 / top-5."""
    classifier = torch.nn.functional.normalize(text_emb.mean(1), dim=1)  # prompt ensembling
    scores = image_emb @ classifier.T  # [N, K]
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return {
        "top1": (top[:, 0] == labels).float().mean().item(),
        "top5": (top == labels[:, None]).any(1).float().mean().item(),
        "chance": 1 / scores.shape[1],
    }


def retrieval(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ks=(1, 5),
    labels: torch.Tensor | None = None,
    captions: list[str] | None = None,
) -> dict:
    """Row i of both [N, D] is a pair. Recall@k of image -> text and text -> image, with chance (k / N).

    Templated captions repeat and carry only the class and a few attributes, so the exact pair is often
    indistinguishable from others; two more readings say what was retrieved:
    - ``captions`` given: ``*_caption_r{k}`` counts a candidate whose caption is the same string as the
      true one as a hit (identical texts cannot be told apart by any model);
    - ``labels`` given: ``*_class_r{k}`` counts a candidate of the query's class as a hit.
    """
    sim = image_emb @ text_emb.T  # [N, N]
    n = len(sim)
    target = torch.arange(n)
    same = {"": target[:, None] == target[None, :]}  # [N, N]: candidate j counts for query i
    if captions is not None:
        index = {c: i for i, c in enumerate(dict.fromkeys(captions))}  # one id per distinct string
        ids = torch.tensor([index[c] for c in captions])
        same["caption_"] = ids[:, None] == ids[None, :]
    if labels is not None:
        same["class_"] = labels[:, None] == labels[None, :]
    out = {f"chance_r{k}": min(k / n, 1.0) for k in ks}
    for name, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        top = s.topk(min(max(ks), n), dim=1).indices  # [N, k]
        for kind, hit in same.items():
            found = hit.gather(1, top)  # [N, k]: is each retrieved candidate a hit
            out.update({f"{name}_{kind}r{k}": found[:, :k].any(1).float().mean().item() for k in ks})
    return out
