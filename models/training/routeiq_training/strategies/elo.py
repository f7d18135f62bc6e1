"""Query-independent Bradley-Terry ratings on the Elo scale.

On every training query, each pair of candidates with different scores is one game won
by the higher score (equal scores are no game). Bradley-Terry strengths are fitted by
minorisation-maximisation (Hunter, 2004), with one virtual drawn game (half a win each)
between every pair so that a candidate that never wins or never loses keeps a finite
rating. Ratings are `1000 + 400 * log10(strength)`, strengths normalised to a geometric
mean of 1.
"""

import numpy as np

from .common import Trained, TrainSet, f32, matrix

ITERATIONS = 10_000
TOLERANCE = 1e-12


def pairwise_wins(scores: np.ndarray) -> np.ndarray:
    """wins[a, b]: the training queries on which a scored higher than b."""
    return (scores[:, :, None] > scores[:, None, :]).sum(axis=0).astype(np.float64)


def bradley_terry(wins: np.ndarray) -> np.ndarray:
    k = len(wins)
    wins = wins + 0.5 * (1 - np.eye(k))  # the virtual draws
    games = wins + wins.T
    np.fill_diagonal(games, 0)
    total_wins = wins.sum(axis=1) - np.diag(wins)
    strength = np.ones(k)
    for _ in range(ITERATIONS):
        denominators = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = total_wins / denominators
        updated /= np.exp(np.log(updated).mean())
        done = np.max(np.abs(updated - strength)) < TOLERANCE
        strength = updated
        if done:
            break
    return 1000 + 400 * np.log10(strength)


def train(ts: TrainSet) -> Trained:
    ratings = bradley_terry(pairwise_wins(ts.scores))
    return Trained(
        params={"ratings": f32(ratings)},
        reference=lambda features: np.tile(ratings, (len(features), 1)),
        notes={"ratings": {c.name: round(float(r), 1) for c, r in zip(ts.candidates, ratings)}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    ratings = matrix(params["ratings"])
    return lambda features: np.tile(ratings, (len(features), 1))
