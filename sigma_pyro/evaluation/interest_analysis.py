"""Do the learned interests mean anything? Clusters of items and users, compared with the
planted ground truth of the synthetic data, and the category diversity of recommendations.

Each prior with latent clusters induces a partition of items and of users:

- ``sigma`` / ``sigma-uniform``: an item belongs to the prototype it is most assigned to
  (argmax of the soft assignment of its embedding); a user to their strongest interest at
  the last position of their history.
- ``gmm`` / ``vamp`` (mixtures over z shared by all users): a user belongs to the component
  with the highest responsibility for their posterior mean z at the last position. The
  mixture lives in z space, not in the item-embedding space, so an item is placed in z space
  as the posterior mean after a history of that item alone, and assigned the same way.
- ``normal`` has no clusters.

Agreement with planted labels is the normalised mutual information (arithmetic-mean
normalisation), with the chance level of a random relabelling alongside, since NMI of
unrelated partitions is not exactly zero on finite samples.

Diversity needs one item partition shared by every prior, or the numbers are not
comparable: on synthetic data the planted categories; on real data the K topics of a
non-negative matrix factorisation of the user-item matrix of the histories, each item taking
its strongest topic. NMF is deterministic given its seed, needs no k-means, and never sees
the held-out test items. Each prior's own partition gives a second, per-model number.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from sklearn.decomposition import NMF
from sklearn.metrics import normalized_mutual_info_score

from sigma_pyro.data.batching import pad_right
from sigma_pyro.evaluation.predict import ranked_chunks
from sigma_pyro.models.priors import PriorInputs


def normalized_mutual_information(a, b) -> float:
    """NMI of two labelings of the same objects, I(a; b) / ((H(a) + H(b)) / 2); 1 when both
    are a single cluster (identical partitions)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("labelings must be non-empty 1-D arrays of the same length")
    return normalized_mutual_info_score(a, b, average_method="arithmetic")


def chance_nmi(a, b, repeats: int = 20, seed: int = 0) -> float:
    """Mean NMI of ``a`` against random permutations of ``b``: the level of no relation."""
    rng = np.random.default_rng(seed)
    b = np.asarray(b)
    return float(
        np.mean([normalized_mutual_information(a, rng.permutation(b)) for _ in range(repeats)])
    )


def _shared_mixture(module):
    """The prior's mixture over z when it is the same for every user (gmm, vamp), else None."""
    if module.prior.requires_interests or not module.prior.stochastic:
        return None
    prior = module.prior(
        PriorInputs((1, 1), module.latent_dim, None, module.item_embedding.weight.device, module)
    )
    return prior if hasattr(prior, "component_distribution") else None


def _responsibility_argmax(mixture, z: torch.Tensor) -> np.ndarray:
    """Component with the highest posterior responsibility for each z [N, D]."""
    components = mixture.component_distribution.log_prob(z[:, None, None, None, :])
    log_weights = torch.log_softmax(mixture.mixture_distribution.logits, dim=-1)
    return (components + log_weights).reshape(z.shape[0], -1).argmax(dim=-1).cpu().numpy()


@torch.no_grad()
def item_clusters(module) -> np.ndarray | None:
    """Cluster of each item, indexed by internal id (entry 0, padding, is -1); None when the
    prior has no clusters."""
    items = torch.arange(1, module.num_items + 1, device=module.item_embedding.weight.device)
    with module.evaluating():
        if module.interests is not None:
            assignment = module.interests.assign(module.interest_item_vectors(items))
            labels = assignment.argmax(dim=-1).cpu().numpy()
        else:
            mixture = _shared_mixture(module)
            if mixture is None:
                return None
            loc, _ = module.encode(items.unsqueeze(1))
            labels = _responsibility_argmax(mixture, loc[:, 0])
    return np.concatenate([[-1], labels])


@torch.no_grad()
def user_clusters(module, histories: list[np.ndarray], batch_size: int = 1024) -> np.ndarray | None:
    """Cluster of each user after their history; None when the prior has no clusters."""
    device = module.item_embedding.weight.device
    out = []
    with module.evaluating():
        mixture = None if module.interests is not None else _shared_mixture(module)
        if module.interests is None and mixture is None:
            return None
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            items = pad_right(chunk, module.config.max_seq_length).to(device)
            mask = items != 0
            rows, last = torch.arange(items.shape[0], device=device), mask.sum(dim=1) - 1
            if module.interests is not None:
                intensity = module.interests_after(items, mask).intensity
                out.append(intensity.argmax(dim=-1).cpu().numpy())
            else:
                loc, _ = module.encode(items)
                out.append(_responsibility_argmax(mixture, loc[rows, last]))
    return np.concatenate(out)


def synthetic_labels(dataset, synthetic) -> tuple[np.ndarray, np.ndarray]:
    """Planted category per internal item id (entry 0 is -1) and planted strongest interest
    per user of ``dataset``, from the generator's ground truth (ids ``i<n>``, ``u<n>``)."""
    raw_index = np.array([int(raw[1:]) for raw in dataset.items.raw_ids])
    categories = np.concatenate([[-1], synthetic.item_category[raw_index]])
    users = np.array([int(user[1:]) for user in dataset.users])
    return categories, synthetic.user_interest_weights[users].argmax(axis=1)


def planted_recovery(module, dataset, synthetic, histories: list[np.ndarray]) -> dict[str, float]:
    """NMI between learned and planted item categories and user interests, each with its
    chance level (NaN for a prior without clusters), and ``nmi_users_oracle``, the user NMI
    that the planted item categories themselves reach from the same histories."""
    categories, strongest = synthetic_labels(dataset, synthetic)
    out = dict.fromkeys(
        ("nmi_items", "nmi_items_chance", "nmi_users", "nmi_users_chance"), float("nan")
    )
    # The ceiling of the user NMI: the majority planted category of each history, what a
    # model that knew every item's category would call the user's strongest interest.
    majority = np.array([np.bincount(categories[h]).argmax() for h in histories])
    out["nmi_users_oracle"] = normalized_mutual_information(majority, strongest)
    items = item_clusters(module)
    if items is not None:
        out["nmi_items"] = normalized_mutual_information(items[1:], categories[1:])
        out["nmi_items_chance"] = chance_nmi(items[1:], categories[1:])
    users = user_clusters(module, histories)
    if users is not None:
        out["nmi_users"] = normalized_mutual_information(users, strongest)
        out["nmi_users_chance"] = chance_nmi(users, strongest)
    return out


def nmf_item_topics(
    histories: list[np.ndarray],
    num_items: int,
    num_topics: int,
    iterations: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Strongest topic of each item (internal id; entry 0 is -1) in a ``num_topics``-factor
    NMF X ~ W H of the binary user-item matrix of ``histories``, by Lee & Seung's
    multiplicative updates for the Frobenius loss. Items in no history get topic -1."""
    rows = np.repeat(np.arange(len(histories)), [len(s) for s in histories])
    cols = np.concatenate(histories) - 1
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(histories), num_items))
    x.data[:] = 1.0  # repeated interactions count once
    rng = np.random.default_rng(seed)
    w = rng.random((len(histories), num_topics)) + 0.1
    h = rng.random((num_topics, num_items)) + 0.1
    # Items are the rows (X^T ~ H^T W^T) so that scikit-learn updates the item factors first
    # in each iteration, the order of the hand-written updates this replaced: the topics of
    # earlier results stay the same. tol=0 runs every iteration.
    nmf = NMF(
        num_topics,
        init="custom",
        solver="mu",
        beta_loss="frobenius",
        max_iter=iterations,
        tol=0.0,
    )
    item_factors = nmf.fit_transform(x.T, W=h.T.copy(), H=w.T.copy())
    topics = item_factors.argmax(axis=1)
    topics[np.asarray(x.sum(axis=0)).ravel() == 0] = -1
    return np.concatenate([[-1], topics])


@torch.no_grad()
def recommendation_diversity(
    module,
    histories: list[np.ndarray],
    categories: np.ndarray,
    k: int = 20,
    batch_size: int = 1024,
    item_chunk_size: int = 8192,
    device="cpu",
) -> float:
    """Mean number of distinct categories among each user's top-``k`` unseen items, with
    ``categories`` indexed by internal item id; items labelled -1 (no category) are not
    counted."""
    counts = []
    for _, items in ranked_chunks(module, histories, k, device, batch_size, item_chunk_size):
        for row in categories[items.cpu().numpy()]:
            counts.append(len(np.unique(row[row >= 0])))
    return float(np.mean(counts))
