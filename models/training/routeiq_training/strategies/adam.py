"""Full-batch Adam over a dict of numpy arrays, for the strategies trained in numpy
(mf, graph), with the number of steps chosen on the inner split."""

from collections.abc import Callable

import numpy as np

Params = dict[str, np.ndarray]
# loss_and_grads(params) -> gradients of the loss (same keys as params)
Gradients = Callable[[Params], Params]


class Adam:
    def __init__(self, params: Params, lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
            m_hat = self.m[k] / (1 - self.beta1 ** self.t)
            v_hat = self.v[k] / (1 - self.beta2 ** self.t)
            params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def run(params: Params, gradients: Gradients, steps: int, lr: float,
        every: int = 0, checkpoint: Callable[[int, Params], None] | None = None) -> Params:
    """`steps` Adam steps on `params` (in place); `checkpoint(step, params)` every
    `every` steps."""
    opt = Adam(params, lr)
    for step in range(1, steps + 1):
        opt.step(params, gradients(params))
        if checkpoint and every and step % every == 0:
            checkpoint(step, params)
    return params


def best_steps(fit_params: Callable[[], Params], gradients: Gradients,
               validate: Callable[[Params], float], max_steps: int, lr: float,
               every: int) -> tuple[int, dict[int, float]]:
    """The number of steps (a multiple of `every`) with the best validation quality."""
    quality: dict[int, float] = {}
    run(fit_params(), gradients, max_steps, lr, every,
        lambda step, p: quality.__setitem__(step, validate(p)))
    best = max(quality.values())
    return min(s for s, q in quality.items() if q == best), quality
