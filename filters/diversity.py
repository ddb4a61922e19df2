"""Clusters of neuron profiles, so that a per-cluster cap keeps the selection diverse.

k-means runs in faiss on z-scored neuron vectors. Training rows are put in a canonical order
(by document hash) first, so the centroids do not depend on how shards were split across
workers; assignment is a per-column loop in float64, so a document lands in the same cluster
in `curate filter` and in a datatrove filter.
"""

import numpy as np

from filters.scoring import ZParams


def standardize(neurons: np.ndarray, params: ZParams) -> np.ndarray:
    mean, std = np.array(params.mean), np.array(params.std)
    return (neurons.astype(np.float64) - mean) / std


def fit_centroids(
    neurons: np.ndarray, params: ZParams, hashes: np.ndarray, k: int, iterations: int, seed: int
) -> np.ndarray:
    """k centroids [k, columns] in z-score space (fewer documents than k: one per document)."""
    import faiss  # imported here: only diversity recipes need it

    x = standardize(neurons[np.argsort(hashes, kind="stable")], params).astype(np.float32)
    k = min(k, len(x))
    faiss.omp_set_num_threads(1)  # multithreaded reductions would make centroids vary by run
    kmeans = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(x))
    return kmeans.centroids.astype(np.float64)


def assign(neurons: np.ndarray, params: ZParams, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid per row (lowest index on exact ties)."""
    x = standardize(neurons, params)
    best = np.full(len(x), np.inf)
    label = np.zeros(len(x), np.int32)
    for c, centroid in enumerate(centroids):
        dist = np.zeros(len(x))
        for j in range(x.shape[1]):
            dist += (x[:, j] - centroid[j]) ** 2
        closer = dist < best
        best[closer] = dist[closer]
        label[closer] = c
    return label
