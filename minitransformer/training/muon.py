"""Muon: momentum, then the update matrix orthogonalised, for the blocks' weight matrices.

Muon (Keller Jordan, 2024) keeps a momentum buffer per matrix, as SGD does, and then replaces
the update G by the nearest matrix with all singular values near 1 (roughly U V^T, where
G = U S V^T): every direction the gradient points in moves by the same amount, instead of a few
dominant ones. Five steps of a Newton-Schulz iteration compute it with matrix products alone.

The update is exactly torch.optim.Muon's (tested against it); what differs is how it is run.
torch.optim.Muon orthogonalises one matrix at a time: for this project's GPU model, 24 matrices
x ~20 small kernels each, launched one by one. Here the matrices of one shape are stacked into a
(N, A, B) batch (tall ones transposed, so an MLP's two matrices share one) and orthogonalised
together with batched products (`torch.baddbmm`), as nanochat's and modded-nanogpt's Muon do:
3 batches, so ~20 kernels per batch instead of per matrix. The momentum and the weight updates use PyTorch's multi-tensor (`torch._foreach_*`)
operations, one kernel for many tensors. Nothing reads a value back to the host, so a GPU step
never waits.

The state is torch.optim.Muon's (a `momentum_buffer` per matrix), so checkpoints written with
either load into the other.
"""

import math
from collections import defaultdict

import torch

# The quintic iteration's coefficients (Keller Jordan's): chosen for the steepest slope at 0, so
# that 5 steps bring every singular value into about [0.7, 1.2].
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def orthogonalize(G: torch.Tensor, steps: int = NS_STEPS, coefficients=NS_COEFFICIENTS, eps: float = EPS,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The Newton-Schulz iteration on a stack of matrices G (N, A, B); returns (N, A, B) in dtype.

    Each matrix X is first divided by its norm, so its singular values are at most 1; each step
    then maps X to a X + (b XX^T + c (XX^T)^2) X, a polynomial that pushes them towards 1. A tall
    matrix is transposed first, so that the Gram matrix XX^T is the smaller of the two.
    """
    a, b, c = coefficients
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # (N, B, A)
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = X @ X.mT  # (N,A,B) @ (N,B,A) -> (N,A,A)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b*gram + c*gram@gram: (N, A, A)
        X = torch.baddbmm(X, poly, X, beta=a)  # a*X + poly@X: (N,A,A) @ (N,A,B) -> (N,A,B)
    return X.mT if tall else X


def lr_scale(shape: torch.Size) -> float:
    """Keller Jordan's ("original") adjustment: sqrt(max(1, rows / columns)), so that tall
    matrices, whose orthogonalised updates have smaller entries, move as much as wide ones."""
    return math.sqrt(max(1.0, shape[0] / shape[1]))


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters, stacked by shape: the update of torch.optim.Muon (nesterov momentum,
    5 Newton-Schulz steps, decoupled weight decay, the "original" learning-rate adjustment).

    ns_dtype: the precision of the Newton-Schulz products. torch.optim.Muon always uses bfloat16,
    which is fast where it is native (GPUs, AVX512-BF16 and AMX CPUs) and emulated, slowly,
    elsewhere: on a 2-core AVX2 CPU, 24 matrices 128x128 took 598 ms in bfloat16 against 22 ms
    in float32. A training run sets it to the precision it computes in (setup.py), so one
    measured decision covers the whole step; float32 is right on any machine.
    """

    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = NS_STEPS, ns_dtype: torch.dtype = torch.float32):
        # The group keys torch.optim.Muon uses, so that either loads the other's state_dict.
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=NS_COEFFICIENTS, eps=EPS, ns_steps=ns_steps, adjust_lr_fn="original")
        super().__init__(params, defaults)
        # Not a group setting: it is how the update is computed, not what it is, and the groups
        # stay torch.optim.Muon's, so that either loads the other's state_dict.
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates matrices only; got a parameter of shape {tuple(p.shape)}")

    # float16 training's GradScaler hands this optimizer the scale and an overflow flag (grad_scale,
    # found_inf, 0-d tensors on the device) instead of reading the flag on the host to skip the step:
    # the step is then applied or not on the device, and the host never waits (torch.optim's
    # fused AdamW does the same).
    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the Optimizer contract: re-evaluate the loss first, if asked
            with torch.enable_grad():
                loss = closure()
        keep, inverse_scale = scaler_flags(self)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            grads = [p.grad for p in params]
            if keep is not None:  # the scaler's step: unscale, and make an overflowed step's gradients 0
                grads = [torch.where(keep > 0, g * inverse_scale, 0.0) for g in grads]
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            momentum, lr = group["momentum"], group["lr"]
            # buf = momentum * buf + (1 - momentum) * grad
            scaled_lerp_(buffers, grads, 1 - momentum, keep)
            # Nesterov: step along the gradient plus the momentum it is about to add.
            updates = list(torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers)
            scaled_mul_(params, lr * group["weight_decay"], keep)  # decoupled weight decay, all at once
            # A tall matrix's update is orthogonalised as its transpose, so tall and wide matrices
            # of transposed shapes (an MLP's c_fc and c_proj) share one batch.
            by_shape = defaultdict(list)
            for i, p in enumerate(params):
                by_shape[wide(p.shape)].append(i)
            for shape, members in by_shape.items():
                stacked = torch.stack([as_wide(updates[i]) for i in members])  # (N, A, B), A <= B
                ortho = orthogonalize(stacked, group["ns_steps"], group["ns_coefficients"], group["eps"], self.ns_dtype)
                ortho = ortho.to(params[members[0]].dtype)  # (N, A, B), in the parameters' dtype
                for i, update in zip(members, ortho.unbind(0)):
                    updates[i] = update.mT if params[i].shape != update.shape else update  # each back in its shape
            # Tall matrices move further (lr_scale): one multi-tensor update per scale.
            by_scale = defaultdict(list)
            for i, p in enumerate(params):
                by_scale[lr_scale(p.shape)].append(i)
            for scale, members in by_scale.items():
                scaled_add_([params[i] for i in members], [updates[i] for i in members], -lr * scale, keep)
        return loss


def scaler_flags(optimizer) -> tuple[torch.Tensor | None, torch.Tensor | float]:
    """(keep, 1 / scale) from a GradScaler's step: keep is 1.0 or 0.0 on the device (0 when the
    gradients overflowed); (None, 1.0) outside one. Gradients the scaler already unscaled come
    with no scale."""
    found_inf = getattr(optimizer, "found_inf", None)
    if found_inf is None:
        return None, 1.0
    grad_scale = getattr(optimizer, "grad_scale", None)
    keep = (found_inf == 0).float()  # 0-d, on the device: nothing is read back
    return keep, 1.0 if grad_scale is None else grad_scale.double().reciprocal().float()


def scaled_lerp_(buffers, grads, weight: float, keep) -> None:
    """buffers += weight * (grads - buffers), times keep when given (0: unchanged)."""
    if keep is None:
        torch._foreach_lerp_(buffers, grads, weight)
    else:
        for buffer, grad in zip(buffers, grads):
            buffer.lerp_(grad, weight * keep)


def scaled_mul_(params, decay: float, keep) -> None:
    """params *= 1 - decay (times keep when given)."""
    if keep is None:
        torch._foreach_mul_(params, 1 - decay)
    else:
        factor = 1 - decay * keep  # 0-d: 1 when the step is skipped
        for p in params:
            p.mul_(factor)


def scaled_add_(params, updates, alpha: float, keep) -> None:
    """params += alpha * updates (times keep when given)."""
    if keep is None:
        torch._foreach_add_(params, updates, alpha=alpha)
    else:
        for p, update in zip(params, updates):
            p.add_(update * (alpha * keep))


def wide(shape: torch.Size) -> tuple[int, int]:
    """A matrix shape with the smaller side first."""
    return (shape[0], shape[1]) if shape[0] <= shape[1] else (shape[1], shape[0])


def as_wide(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix, transposed if it is tall (a view, no copy)."""
    return matrix if matrix.shape[0] <= matrix.shape[1] else matrix.mT
